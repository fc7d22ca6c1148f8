"""``pld predict``: classify a file of inputs with a saved rulebook."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pld.cli._common import open_cache, out
from pld.metrics import citation_summary, summary
from pld.rulebook import Rulebook
from pld.rundir import atomic_write, check_destination
from pld.tasks.base import Example, template_fields
from pld.tasks.files import load_records


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("inputs", type=click.Path(dir_okay=False, exists=True))
@click.option("--student", required=True, help="Student model spec.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Predictions JSONL [default: stdout].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Requests in flight at once (e.g. 64 for vLLM/SGLang) [default: the run's].",
)
@click.option(
    "--cite",
    is_flag=True,
    help="Also ask which rule decided each answer (a 'rule' field: a rule id or none).",
)
@click.option("--cache", "cache_path", default=None)
@click.option("--no-cache", is_flag=True)
def predict(
    run_dir: str,
    inputs: str,
    student: str,
    out_path: str | None,
    concurrency: int | None,
    cite: bool,
    cache_path: str | None,
    no_cache: bool,
) -> None:
    """Classify INPUTS (JSONL with the task's fields) with the rulebook in RUN_DIR, sending
    exactly the saved system_prompt.txt and user_template.txt. Against an OpenAI-compatible
    server, --concurrency N keeps N requests in flight. --cite adds the rule the student says
    decided each answer; the labels are those it gives without --cite."""
    if out_path:  # before any model work: a destination that cannot be written fails now
        check_destination(Path(out_path))
    rb = Rulebook.load(run_dir)
    recs = load_records(
        inputs, text_fields=template_fields(rb.user_template), labels=rb.labels, require_label=False
    )
    preds = rb.predict(
        [Example(r.id, r.fields, r.label) for r in recs],
        student,
        cache=open_cache(cache_path, no_cache),
        concurrency=concurrency,
        cite=cite,
    )
    lines = "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in preds)
    if not out_path:
        sys.stdout.write(lines)
        return
    atomic_write(Path(out_path), lines)
    scored = [p for p in preds if p.gold]
    msg = f"wrote {len(preds)} predictions to {out_path}"
    if scored:
        s = summary(scored, rb.labels, ci=False)
        msg += f"; macro-F1 {s['macro_f1']:.3f} on {len(scored)} labeled, {s['invalid']} invalid"
    if cite:
        c = citation_summary(preds, {i.id: i.labels for i in rb.instructions.instructions})
        msg += f"; {c['cited']} cite a rule, {c['none']} none, {c['invalid']} invalid citations"
    out.print(msg)


COMMANDS = [predict]
