"""``pld audit``: leave-one-rule-out on the run's validation split, citations, overlapping
rules and rules naming other labels; writes RUN_DIR/audit.json and prints a per-rule table."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import click
from rich.table import Table

from pld.audit import AuditSettings, audit, audit_data, save_audit
from pld.cli._common import RichProgress, err, open_cache, out
from pld.errors import ConfigError
from pld.models.client import EmbedClient
from pld.models.registry import redact_spec, resolve_embedder
from pld.rulebook import Rulebook

NO_EMBEDDER = "none"


def embedder_spec(rb: Rulebook, given: str | None) -> str | None:
    """The embedder for text similarity: ``--embedder``, else the one the run was distilled
    with (``pld distill``'s default when it recorded none), else none (the lexical
    fallback). ``none`` asks for the fallback."""
    if given is not None:
        return None if given == NO_EMBEDDER else given
    cli = rb.run_info.get("cli")
    if not isinstance(cli, Mapping):
        return None
    return str(cli.get("embedder") or "local:smollm2")


def student_spec(rb: Rulebook, given: str | None) -> str:
    """``--student``, else the student the run was distilled with."""
    spec = given or (rb.run_info.get("cli") or {}).get("student")
    if not spec:
        raise ConfigError("the run records no student spec; give --student SPEC")
    return str(spec)


def rule_table(record: Mapping[str, Any]) -> Table:
    """One row per rule: what it decides, how often it is cited, what removing it does."""
    full = record["full"]
    t = Table(
        title=f"{record['task']}: leave-one-rule-out on {record['n_val']} validation items "
        f"(macro-F1 with every rule {full['macro_f1']:.3f})",
        title_justify="left",
    )
    cols = ("rule", "labels", "cited", "fixed", "broken", "F1 without", "Δ F1", "McNemar p")
    for col in (*cols, "sources/edits"):
        t.add_column(col, justify="left" if col in ("rule", "labels") else "right")
    t.add_column("flags")
    for r in record["rules"]:
        flags = list(r["flags"]) + [f"names {x}" for x in r.get("names_other_labels", [])]
        t.add_row(
            r["id"],
            ", ".join(r["labels"]) or "-",
            str(r["cited"]),
            str(len(r["fixed"])),
            str(len(r["broken"])),
            f"{r['macro_f1_without']:.3f}",
            f"{r['delta_macro_f1']:+.3f}",
            f"{r['mcnemar_p']:.3g}",
            f"{r['provenance']['n_sources']}/{len(r['provenance']['history'])}",
            ", ".join(flags) or "",
        )
    return t


def render_audit(record: Mapping[str, Any]) -> None:
    """The table, then the conflicts, label mentions and lint findings, one line each."""
    out.print(rule_table(record))
    c = record["full"]["citation"]
    cons = c["consistency"]
    out.print(
        f"citations: {c['cited']} name a rule, {c['none']} none, {c['invalid']} invalid; "
        f"consistency {'-' if cons is None else f'{cons:.0%}'} (cited rule decides the answer)"
    )
    for x in record["conflicts"]:
        why = []
        for ev in x["evidence"]:
            if ev["kind"] == "citation":
                why.append(f"{ev['cited']} cited on {len(ev['items'])} items of {ev['gold_of']}")
            else:
                why.append(f"similarity {ev['value']:.2f} ({ev['method']})")
        a, b = x["rules"]
        out.print(f"overlap: {a} and {b} name different labels; " + "; ".join(why))
    for m in record["label_mentions"]:
        own = ", ".join(m["own_labels"]) or "no label"
        out.print(f"label: {m['rule']} ({own}) names {', '.join(m['names'])} in its text")
    for f in record["lint"]:
        out.print(f"lint: {f.get('code')} {f.get('rule_id') or ''} {f.get('message')}")
    for n in record["notes"]:
        out.print(f"note: {n}")
    for role, u in record["usage"].items():
        out.print(
            f"{role}: {u['calls']} calls, {u['cache_hits']} cache hits, {u['failures']} failed"
        )


@click.command("audit")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--student", default=None, help="Student model spec [default: the run's].")
@click.option(
    "--embedder",
    default=None,
    help="Embedder for rule similarity, or 'none' for the lexical fallback [default: the run's].",
)
@click.option("--task", "task", default=None, help="The run's data, when it records none.")
@click.option("--text-field", "text_fields", multiple=True, help="Input field(s) of --task.")
@click.option("--label-field", default=None)
@click.option("--description", default=None)
@click.option("--sim-threshold", type=float, default=AuditSettings.sim_threshold, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=None)
@click.option("--cache", "cache_path", default=None)
@click.option("--no-cache", is_flag=True)
def audit_cmd(
    run_dir: str,
    student: str | None,
    embedder: str | None,
    sim_threshold: float,
    concurrency: int | None,
    cache_path: str | None,
    no_cache: bool,
    **data_args: Any,
) -> None:
    """Leave-one-rule-out on RUN_DIR's validation split: for each rule, the items it fixes and
    breaks, macro-F1 with and without it (paired), McNemar p, how often the student cites it
    and its provenance; flags rules that change nothing, overlapping rules naming different
    labels and rules naming another label. Writes RUN_DIR/audit.json (pld report shows it).
    The validation inputs are reloaded from the task the run recorded (or --task)."""
    rb = Rulebook.load(run_dir)
    data = audit_data(rb, data_args)
    spec = student_spec(rb, student)
    cache = open_cache(cache_path, no_cache)
    client = rb.student_client(spec, cache=cache, concurrency=concurrency)
    emb_spec = embedder_spec(rb, embedder) if len(rb.instructions) >= 2 else None
    emb = EmbedClient(resolve_embedder(emb_spec), cache=cache) if emb_spec else None
    n_calls = len(data.val) * (len(rb.instructions) + 1)
    with RichProgress(err) as prog:
        prog.start("audit", n_calls)
        record = audit(
            rb,
            data.val,
            client,
            embedder=emb,
            train=data.train,
            settings=AuditSettings(sim_threshold=sim_threshold),
            on_done=functools.partial(prog.advance, "audit"),
        )
        prog.end("audit")
    record["student_spec"] = redact_spec(spec)
    record["data"] = data.source
    render_audit(record)
    out.print(f"audit written to {save_audit(run_dir, record)}")


COMMANDS = [audit_cmd]
