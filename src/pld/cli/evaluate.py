"""``pld eval`` and ``pld compare``: score methods on the task's test items."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pld.cli._common import RichProgress, err, open_cache, out
from pld.evaluate import Comparison, compare, evaluation_items
from pld.metrics import paired_text
from pld.models.registry import redact_spec
from pld.rulebook import Rulebook

COLUMNS = (
    "method",
    "macro-F1",
    "95% CI",
    "acc",
    "inv",
    "p50 ms",
    "p95 ms",
    "in tok",
    "out tok",
    "$",
    "McNemar p",
    "Δ vs PLD [95% CI], perm. p",
)


def _task_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--task", "task_ref", default=None, help="Task reference (see pld distill)."),
        click.option(
            "--text-field",
            "text_fields",
            multiple=True,
            help="Input field(s) of a .jsonl/.csv task (repeatable) [default: text].",
        ),
        click.option("--label-field", default="label", show_default=True),
        click.option("--description", default=None, help="Task description for a data file."),
        click.option(
            "--split",
            "split_s",
            default=None,
            help="train,val,test fractions [default: the run's, else 0.5,0.25,0.25].",
        ),
        click.option("--seed", type=int, default=None),
        click.option(
            "--n",
            "n_items",
            type=int,
            default=None,
            help="Evaluate at most N test items (seeded, label-stratified).",
        ),
        click.option("--student", required=True, help="Student model spec."),
        click.option(
            "--prompt",
            "prompt_dir",
            type=click.Path(file_okay=False, exists=True),
            default=None,
            help="A finished pld distill run (for method pld).",
        ),
        click.option("--k", default=5, show_default=True, help="Few-shot demonstrations."),
        click.option("--no-calibrate", is_flag=True, help="Use raw label distributions."),
        click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Write results.json and per-item predictions here.",
        ),
        click.option("--cache", "cache_path", default=None),
        click.option("--no-cache", is_flag=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def comparison_table(c: Comparison) -> Table:
    """The methods side by side: score, CI, accuracy, invalid, latency, tokens, cost, McNemar."""
    table = Table(
        title=f"{c.task}: {c.n} test items, student {redact_spec(c.student)}", title_justify="left"
    )
    for col in COLUMNS:
        table.add_column(col, justify="right" if col != "method" else "left")
    for m, r in c.methods.items():
        lo, hi = r["macro_f1_ci95"]
        mc = r.get("mcnemar_vs_pld")
        dv = r.get("diff_vs_pld")
        table.add_row(
            m,
            f"{r['macro_f1']:.3f}",
            f"[{lo:.2f}, {hi:.2f}]",
            f"{r['accuracy']:.3f}",
            str(r["invalid"]),
            f"{r['latency_p50_s'] * 1000:.0f}",
            f"{r['latency_p95_s'] * 1000:.0f}",
            f"{r['prompt_tokens_per_item']:.0f}",
            f"{r['completion_tokens_per_item']:.1f}",
            f"{r['cost_usd']:.4f}",
            f"{mc['p_value']:.3g}" if mc else "-",
            diff_cell(dv),
        )
    return table


def diff_cell(dv: dict[str, Any] | None) -> str:
    """A method's paired macro-F1 difference to PLD with its bootstrap 95% CI and permutation p."""
    return paired_text(dv) if dv else "-"


def render_comparison(c: Comparison, to: Console) -> None:
    """The table, then per-class scores and the confusion of each method."""
    to.print(comparison_table(c))
    for m, r in c.methods.items():
        pc = "  ".join(
            f"{lab}: P {v['precision']:.2f} R {v['recall']:.2f} F1 {v['f1']:.2f}"
            for lab, v in r["per_class"].items()
        )
        to.print(Text.assemble((m, "bold"), f" per class — {pc}"))
        conf = "; ".join(
            f"{g} -> " + ", ".join(f"{p}:{c}" for p, c in row.items() if c)
            for g, row in r["confusion"].items()
        )
        to.print(f"  confusion (gold -> predicted:count): {conf}")
        if r.get("decision"):
            d = r["decision"]
            cal = "calibrated" if d["calibrate"] else "raw"
            to.print(f"  decision: layout {d['layout']}, {cal} ({d.get('source', '')})")


def _evaluate(
    methods: list[str],
    task_ref: str | None,
    text_fields: tuple[str, ...],
    label_field: str,
    description: str | None,
    split_s: str | None,
    seed: int | None,
    n_items: int | None,
    student: str,
    prompt_dir: str | None,
    k: int,
    no_calibrate: bool,
    out_dir: str | None,
    cache_path: str | None,
    no_cache: bool,
) -> None:
    rb = Rulebook.load(prompt_dir) if prompt_dir else None
    ev = evaluation_items(
        {
            "task": task_ref,
            "text_fields": text_fields,
            "label_field": label_field,
            "description": description,
        },
        split=split_s,
        seed=seed,
        n_items=n_items,
        rulebook=rb,
    )
    with RichProgress(err) as prog:
        c = compare(
            methods,
            ev.task,
            ev.items,
            student,
            train=ev.train,
            rulebook=rb,
            k=k,
            seed=ev.seed,
            calibrate=False if no_calibrate else None,
            cache=open_cache(cache_path, no_cache),
            progress=prog,
            val=ev.val,
        )
    render_comparison(c, out)
    if out_dir:
        out.print(f"results written to {c.save(out_dir)}")


@click.command("eval")
@click.option("--method", type=click.Choice(["zero-shot", "few-shot", "cot", "pld"]), required=True)
@_task_options
def eval_cmd(method: str, **kw: Any) -> None:
    """Score one method on the task's test items: macro-F1 with a bootstrap 95% CI, accuracy,
    per-class P/R/F1, confusion, invalid outputs, latency p50/p95, tokens and cost per item."""
    _evaluate([method], **kw)


@click.command("compare")
@click.option(
    "--methods",
    default=None,
    help="Comma-separated [default: zero-shot,few-shot,cot and pld with --prompt].",
)
@_task_options
def compare_cmd(methods: str | None, **kw: Any) -> None:
    """Run several methods on the same items; adds, against PLD, paired McNemar tests and the
    paired bootstrap 95% CI of each method's macro-F1 difference. With
    --prompt, results go to RUN_DIR/eval unless --out says otherwise."""
    ms = (
        methods.split(",")
        if methods
        else ["zero-shot", "few-shot", "cot"] + (["pld"] if kw.get("prompt_dir") else [])
    )
    if kw.get("prompt_dir") and not kw.get("out_dir"):
        kw["out_dir"] = str(Path(kw["prompt_dir"]) / "eval")
    _evaluate([m.strip() for m in ms if m.strip()], **kw)


COMMANDS = [eval_cmd, compare_cmd]
