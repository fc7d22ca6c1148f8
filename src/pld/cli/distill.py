"""``pld distill``: fit a rulebook into a run directory (or continue one)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from pld.cli._common import RichProgress, err, open_cache, out, summary_table, usage_rows
from pld.config import DistillConfig
from pld.distiller import Distiller, plan_distill
from pld.errors import ConfigError, LintFailed
from pld.lint import findings_of
from pld.rulebook import Rulebook
from pld.run import whole_run_usage
from pld.taskref import DEFAULT_SPLIT


@click.command()
@click.option(
    "--task",
    "task_ref",
    help="demo, a task .toml/.yaml, a .jsonl/.csv file, or "
    "stereoset@PATH?..., contract-nli@PATH?..., logiqa@PATH.",
)
@click.option(
    "--text-field",
    "text_fields",
    multiple=True,
    help="Input field(s) of a .jsonl/.csv task (repeatable) [default: text].",
)
@click.option("--label-field", default=None, help="Label field of a .jsonl/.csv task.")
@click.option("--description", default=None, help="Task description for a data file.")
@click.option("--teacher", help="Teacher model spec.")
@click.option("--student", help="Student model spec.")
@click.option("--embedder", default=None, help="Embedder spec [default: local:smollm2].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="New run directory.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    help="Continue the interrupted run in this directory (no finished call repeats).",
)
@click.option("--force", is_flag=True, help="Overwrite a non-empty --out directory.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="TOML file with DistillConfig settings.",
)
@click.option(
    "--split",
    "split_s",
    default=DEFAULT_SPLIT,
    show_default=True,
    help="train,val,test fractions (seeded, stratified).",
)
@click.option("--seed", type=int, default=None)
@click.option("--max-train", type=int, default=None, help="Use at most N training examples.")
@click.option("--max-rounds", type=int, default=None, help="Resolve rounds (0 skips phase 3).")
@click.option("--max-calls", type=int, default=None, help="Hard cap on model calls.")
@click.option("--max-cost", type=float, default=None, help="Hard cap on cost in USD.")
@click.option("--eps", type=float, default=None, help="DBSCAN eps (cosine distance).")
@click.option("--min-samples", type=int, default=None, help="DBSCAN min_samples.")
@click.option(
    "--lint-budget-tokens",
    type=int,
    default=None,
    help="Token budget of the prompt for the rulebook lint [default: 1500].",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Any rulebook lint finding is an error (exit 2, after the run is saved).",
)
@click.option("--cache", "cache_path", default=None, help="Cache database path.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the cache.")
@click.option(
    "--teacher-batch",
    "teacher_batch",
    type=click.Path(file_okay=False),
    default=None,
    help="Send no teacher request: write them to DIR as an OpenAI Batch file and exit 75 "
    "(see below). Kept for --resume.",
)
def distill(
    task_ref: str | None,
    text_fields: tuple[str, ...],
    label_field: str | None,
    description: str | None,
    teacher: str | None,
    student: str | None,
    embedder: str | None,
    out_dir: str | None,
    resume_dir: str | None,
    force: bool,
    config_path: str | None,
    split_s: str,
    cache_path: str | None,
    no_cache: bool,
    teacher_batch: str | None,
    **overrides: Any,
) -> None:
    """Distill TASK's training split into a rulebook for the student.

    \b
    Exit status: 0 done; 2 bad input or a failure (one line says which);
    75 teacher batch pending (--teacher-batch): the phase's teacher requests
       were written to DIR/requests-PHASE-N.jsonl. Answer them with a provider's
       batch API or `pld teacher run`, then `pld teacher import RUN_DIR RESULTS`
       and `pld distill --resume RUN_DIR`; repeat until the exit status is 0.
    """
    if out_dir and resume_dir:
        raise ConfigError("give either --out (new run) or --resume (existing run), not both")
    if resume_dir and force:
        raise ConfigError("--resume and --force contradict each other; choose one")
    run_dir = resume_dir or out_dir
    if not run_dir:
        raise ConfigError("say where the run goes: --out DIR (or --resume DIR)")
    args: dict[str, Any] = {
        "task": task_ref,
        "teacher": teacher,
        "student": student,
        "embedder": embedder,
        "split": split_s,
        "text_fields": list(text_fields) or None,
        "label_field": label_field,
        "description": description,
        "teacher_batch": str(Path(teacher_batch).resolve()) if teacher_batch else None,
    }
    overrides["max_cost_usd"] = overrides.pop("max_cost")
    overrides["lint_strict"] = overrides.pop("strict") or None  # absent: keep the run's
    cfg = DistillConfig.from_toml(config_path) if config_path else DistillConfig()
    plan = plan_distill(args, cfg, overrides, resume_dir=resume_dir)
    t0 = time.perf_counter()
    failed: LintFailed | None = None
    with RichProgress(err) as prog:
        d = Distiller(
            teacher=str(plan.args["teacher"]),
            student=str(plan.args["student"]),
            embedder=str(plan.args["embedder"] or "local:smollm2"),
            config=plan.config,
            cache=open_cache(cache_path, no_cache),
            use_cache=not no_cache,
            progress=prog,
            teacher_batch=plan.args.get("teacher_batch"),
        )
        try:
            d.fit(
                plan.task.with_examples(plan.split.train),
                plan.task.with_examples(plan.split.val),
                run_dir=run_dir,
                resume=bool(resume_dir),
                force=force,
                meta=plan.meta,
            )
        except LintFailed as e:  # the run is complete: show it, then fail
            failed = e
    out.print(summary_table("pld distill", summary_rows(d, run_dir, time.perf_counter() - t0)))
    if failed is not None:
        raise failed


def summary_rows(d: Distiller, run_dir: str, wall_s: float) -> list[tuple[str, str]]:
    """The summary, read from the run's final ledger (run.json as saved after the last call),
    so what is printed is what run.json says; a resumed run also shows its whole cost."""
    led = d.ledger_
    phases = led.get("phases", {})
    ext, syn, res = (phases.get(k, {}) for k in ("extract", "synthesize", "resolve"))
    nan = float("nan")
    r0, best = res.get("val_macro_f1"), res.get("best_val_macro_f1")
    rows = [
        ("run directory", str(Path(run_dir).resolve())),
        ("rulebook", str((Path(run_dir) / "prompt.md").resolve())),
        (
            "rules",
            f"{ext.get('rules', 0)} extracted, {ext.get('failures', 0)} failed; "
            f"{syn.get('instructions', 0)} synthesized, {len(d.instructions_)} final",
        ),
        (
            "val macro-F1",
            f"{nan if r0 is None else r0:.3f} after synthesis -> "
            f"{nan if best is None else best:.3f} after resolve",
        ),
        *decision_rows(d.rulebook_),
        *lint_rows(d.rulebook_),
        *usage_rows(led.get("usage_by_role", {})),
    ]
    if led.get("usage_earlier_processes"):
        whole = whole_run_usage(led)
        rows += [(f"{role} (whole run)", v) for role, v in usage_rows(whole)]
    return [*rows, ("wall time", f"{wall_s:.1f} s")]


def decision_rows(rb: Rulebook) -> list[tuple[str, str]]:
    """The fitted decision and, when the rulebook was no better than zero-shot on
    validation, the harm guard's sentence (one plain sentence with both figures)."""
    d = rb.decision
    if not d:
        return []
    used = d.get("used") or d
    cal = "calibrated" if used["calibrate"] else "raw"
    rows = [
        (
            "decision",
            f"layout {used['layout']}, {cal} (val macro-F1 {d['val_macro_f1']:.3f}; {d['reason']})",
        )
    ]
    if rb.warning:
        action = (d.get("guard") or {}).get("action", "warn")
        kept = {
            "fallback": "the zero-shot prompt is kept instead",
            "warn": "the rulebook is kept",
            "keep": "the rulebook is kept",
        }
        rows.append(("WARNING", f"{rb.warning} ({kept.get(action, action)})"))
    return rows


def lint_rows(rb: Rulebook) -> list[tuple[str, str]]:
    """The rulebook lint: a count, then one row per finding (code and rule, message)."""
    if rb.lint is None:
        return []
    found = findings_of(rb.lint)
    if not found:
        return [("lint", "no findings (lint.json)")]
    rows = [("lint", f"{len(found)} warning(s) (lint.json; pld lint --help explains the codes)")]
    for f in found:
        rows.append((f"WARNING {f.code}" + (f" {f.rule_id}" if f.rule_id else ""), f.message))
    return rows


COMMANDS = [distill]
