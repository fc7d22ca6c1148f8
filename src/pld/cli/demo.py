"""``pld demo``: the offline demo, before and after on held-out tickets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from pld.cli._common import RichProgress, err, out, summary_table, usage_rows
from pld.demo import DEMO_TEACHER, demo_data, run_demo
from pld.models.registry import redact_spec
from pld.rules import InstructionSet


@click.command()
@click.option("--out", "out_dir", default=".pld-demo/run", show_default=True)
@click.option(
    "--teacher",
    default=None,
    help=f"Teacher spec [default: {DEMO_TEACHER}'s recorded replies, shipped with pld].",
)
@click.option("--student", default="local:smollm2", show_default=True)
@click.option("--max-rounds", default=2, show_default=True)
def demo(out_dir: str, teacher: str | None, student: str, max_rounds: int) -> None:
    """Distill the built-in support-ticket task offline and report before/after on test.

    By default the teacher is a frontier LLM whose replies were recorded once and ship with
    pld; the embedding, the student and the scoring run on this machine."""
    t_start = time.perf_counter()
    task, sp = demo_data()
    shown_teacher = redact_spec(teacher) if teacher else f"{DEMO_TEACHER} (recorded)"
    out.print(
        Text.assemble(
            ("pld demo", "bold"),
            f" — task {task.name!r}: {len(task.examples)} tickets, labels "
            f"{', '.join(task.labels)}; split {len(sp.train)}/{len(sp.val)}/{len(sp.test)}; "
            f"teacher {shown_teacher}, student {redact_spec(student)} (all offline)",
        )
    )
    with RichProgress(err) as prog:
        res = run_demo(out_dir, teacher, student, max_rounds, progress=prog)
    _print_rules(res.distiller.instructions_, res.teacher, res.note)
    sr, sb, sa = (
        c.methods[m]
        for c, m in (
            (res.zero_shot_raw, "zero-shot"),
            (res.zero_shot, "zero-shot"),
            (res.pld, "pld"),
        )
    )

    def f1(s: dict[str, Any]) -> str:
        lo, hi = s["macro_f1_ci95"]
        return f"{s['macro_f1']:.3f} [{lo:.2f}, {hi:.2f}]"

    d = res.distiller
    by_role = d.usage_["by_role"]
    calls = sum(s["calls"] for s in by_role.values()) + res.baseline_calls
    hits = sum(s["cache_hits"] for s in by_role.values())
    toks = sum(s["prompt_tokens"] + s["completion_tokens"] for s in by_role.values())
    rows = [
        (
            "test macro-F1 [95% CI]",
            f"zero-shot {f1(sr)}; zero-shot calibrated {f1(sb)}; PLD {f1(sa)}",
        ),
        (
            "test accuracy",
            f"zero-shot {sr['accuracy']:.3f}; calibrated {sb['accuracy']:.3f}; "
            f"PLD {sa['accuracy']:.3f} (n={sa['n']}, invalid {sa['invalid']})",
        ),
        (
            "student p50 latency",
            f"zero-shot {sb['latency_p50_s'] * 1000:.0f} ms; "
            f"PLD {sa['latency_p50_s'] * 1000:.0f} ms per item",
        ),
        ("rulebook", str((Path(out_dir) / "prompt.md").resolve())),
        (
            "rules",
            f"{len(d.rules_)} extracted ({len(d.extraction_failures_)} failed), "
            f"{len(d.instructions_v0_)} synthesized, {len(d.instructions_)} final",
        ),
        ("model calls", f"{calls} ({hits} more answered from the cache)"),
        *usage_rows(by_role),
        *_recorded_rows(res.recorded_usage),
        ("distillation tokens", f"{toks}"),
        ("wall time", f"{time.perf_counter() - t_start:.1f} s"),
    ]
    out.print(summary_table("pld demo — held-out test split", rows))


def _recorded_rows(u: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The recorded teacher's replies are imported, not called: their usage is the
    recording's (the student and embedder rows above are this machine's)."""
    if u is None:
        return []
    if not u["replies"]:
        return [("recorded teacher", "replies imported by an earlier demo run (in the cache)")]
    return [
        (
            "recorded teacher",
            f"{u['replies']} replies imported, {u['prompt_tokens']} prompt + "
            f"{u['completion_tokens']} completion tokens (as recorded)",
        )
    ]


def _print_rules(rules: InstructionSet, teacher: str, note: str) -> None:
    """The rulebook itself: the point of the demo is to read it."""
    out.print(Text.assemble("\n", ("The rulebook", "bold"), f" — rules written by {teacher}"))
    for ins in rules.instructions:
        labels = ", ".join(ins.labels)
        out.print(Text.assemble("  ", (ins.id, "bold"), f" ({labels}) {ins.text}"))
    if note:
        out.print(Text.assemble(("note:", "yellow"), f" {note}"))
    out.print()


COMMANDS = [demo]
