"""``pld edit``: change or remove one rule, saved as a new rulebook version (a new directory;
the original run is never written), linted, and optionally scored at once."""

from __future__ import annotations

import shlex

import click
from rich.text import Text

from pld.cli._common import out
from pld.cli.evaluate import _evaluate
from pld.cli.lint import render_lint
from pld.edit import edit_run


@click.command("edit")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("rule_id")
@click.option("--text", default=None, help="The rule's new text (one sentence with a condition).")
@click.option("--remove", is_flag=True, help="Remove the rule instead.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="With --text: the label(s) the rule decides (repeatable) [default: unchanged].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="New directory for the edited rulebook [default: RUN_DIR-edit-N beside RUN_DIR].",
)
@click.option(
    "--eval",
    "evaluate",
    is_flag=True,
    help="Then score the edited rulebook on the run's test split, as pld eval --method pld "
    "does (results in OUT/eval).",
)
@click.option("--student", default=None, help="Student for --eval [default: the run's].")
@click.option("--n", "n_items", type=int, default=None, help="--eval on at most N test items.")
@click.option("--cache", "cache_path", default=None, help="Cache database path (for --eval).")
def edit_cmd(
    run_dir: str,
    rule_id: str,
    text: str | None,
    remove: bool,
    labels: tuple[str, ...],
    out_dir: str | None,
    evaluate: bool,
    student: str | None,
    n_items: int | None,
    cache_path: str | None,
) -> None:
    """Rewrite rule RULE_ID of RUN_DIR's rulebook (--text) or remove it (--remove).

    The edit is saved as a new rulebook version in a new directory; the rule's history and
    run.json record it with author "user". The new text must pass the checks every
    teacher-written rule passes (a condition on the input, no instruction to the model, no
    copy of a training input). The edited rulebook is linted, and with --eval scored on the
    run's test split."""
    res = edit_run(run_dir, rule_id, text=text, remove=remove, labels=labels, out=out_dir)
    what = "removed" if remove else "rewrote"
    out.print(
        Text.assemble(
            ("pld edit: ", "bold"),
            f"{what} {rule_id} (version {res.record['from_version']} -> "
            f"{res.record['version']}); new rulebook in {res.path}",
        )
    )
    render_lint(res.lint, out, title="lint of the edited rulebook")
    spec = student or (res.rulebook.run_info.get("cli") or {}).get("student")
    if not evaluate:
        cmd = ["pld", "eval", "--method", "pld", "--prompt", str(res.path)]
        cmd += ["--student", str(spec or "STUDENT_SPEC")]
        out.print(Text.assemble(("score it: ", "bold"), shlex.join(cmd)))
        return
    if not spec:
        raise click.UsageError("--eval needs --student SPEC (the run does not name one)")
    _evaluate(
        ["pld"],
        task_ref=None,
        text_fields=(),
        label_field="label",
        description=None,
        split_s=None,
        seed=None,
        n_items=n_items,
        student=str(spec),
        prompt_dir=str(res.path),
        k=5,
        no_calibrate=False,
        out_dir=str(res.path / "eval"),
        cache_path=cache_path,
        no_cache=False,
    )


COMMANDS = [edit_cmd]
