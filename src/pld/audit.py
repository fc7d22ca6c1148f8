"""``pld audit``: what each rule is worth on the validation split, which rules may collide, and
what in the rulebook is risky.

Leave-one-rule-out: for every rule the student answers the validation items with the
rulebook's prompt minus that rule (the same layout re-rendered, its own calibration prior
measured as the rulebook's is), and the answers are paired item by item with the full
rulebook's: the items the rule *fixes* (right with it, wrong without), *breaks* (wrong with
it, right without), macro-F1 with and without it (Δ = with − without, with the paired
bootstrap 95% CI) and the exact McNemar p of fixed vs broken. One cited pass of the full
rulebook (``Rulebook.apredict(cite=True)``, whose labels are the uncited ones by construction)
says how often each rule is cited and feeds the overlap evidence (``pld.overlap``).

A rule is a **removal candidate** when removing it changes no answer (``no_effect``), or
changes answers but fixes none without lowering macro-F1 (``no_gain``). Pairs of rules naming
different labels whose conditions overlap, and rules whose text names a label other than
their own, are flagged. Every student call goes through the ``ChatClient`` (and its cache):
rerunning an audit costs nothing. Student calls: (rules + 1) x (validation items + 3
content-free calls when calibrated) + one citation per item.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pld import overlap
from pld._async import run_sync
from pld._version import __version__
from pld.errors import ConfigError
from pld.evaluate import mcnemar_counts
from pld.lint import Finding, lint, run_budget, token_counter
from pld.metrics import citation_summary, macro_f1, paired_bootstrap_diff, summary
from pld.models.client import ChatClient, EmbedClient
from pld.phases.classify import classify_with, label_prior
from pld.phases.layouts import DEFAULT_LAYOUT, render_layout
from pld.predictions import Prediction, example_items
from pld.prompts import Prompt
from pld.rulebook import Rulebook
from pld.rules import Instruction, InstructionSet
from pld.rundir import RunDir
from pld.taskref import TaskRef
from pld.tasks.base import Example, template_fields

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.json"
AUDIT_VERSION = 1


@dataclass(frozen=True)
class AuditSettings:
    """Thresholds of the flags (see ``pld.overlap``) and the bootstrap's size and seed."""

    sim_threshold: float = overlap.SIM_THRESHOLD
    min_confusions: int = overlap.MIN_CONFUSIONS
    resamples: int = 1000
    seed: int = 0


@dataclass
class AuditData:
    """What an audit runs on: the validation items, and the training examples (for lint)."""

    val: list[Example]
    train: list[Example] = field(default_factory=list)
    source: str = ""


def prompt_digest(rb: Rulebook) -> str:
    """A digest of the exact prompt bytes, so an audit is tied to the rulebook it scored."""
    return hashlib.sha256(f"{rb.system_prompt}\0{rb.user_template}".encode()).hexdigest()[:16]


def audit_data(rb: Rulebook, args: Mapping[str, Any] | None = None) -> AuditData:
    """The run's validation (and training) items. A run directory stores their ids, not
    their inputs, so the data is reloaded from the task the run recorded (``pld distill``'s
    ``--task`` and field flags), or from ``args`` (the same keys) when given; an id the data
    does not hold is an error, never a silently smaller audit."""
    run, args = rb.run_info, dict(args or {})
    val_ids = [str(x) for x in run.get("val_ids") or ()]
    where = rb.origin or "the rulebook"
    if not val_ids:
        raise ConfigError(
            f"{where} records no validation split (no val_ids in run.json); audit it from "
            "Python with pld.audit.audit(rulebook, val_examples, student)"
        )
    cli = dict(run.get("cli") or {})
    merged = {k: args.get(k) or cli.get(k) for k in ("task", "text_fields", "description")}
    merged["label_field"] = args.get("label_field") or cli.get("label_field")
    if not merged["task"]:
        raise ConfigError(
            f"{where} does not record its task data (fitted from Python); give --task (and "
            "--text-field/--label-field) for the data it was fitted on"
        )
    task = TaskRef.from_args(merged).load()
    by_id = {e.id: e for e in task.examples}
    missing = [i for i in val_ids if i not in by_id]
    if missing:
        raise ConfigError(
            f"the task's data lacks {len(missing)} of the run's {len(val_ids)} validation "
            f"items (e.g. {missing[0]}); give the data the run was fitted on with --task"
        )
    need = set(template_fields(rb.user_template))
    lacking = sorted(need - set(by_id[val_ids[0]].fields))
    if lacking:
        raise ConfigError(
            f"the task's items lack the field(s) {lacking} the rulebook's prompt uses; give "
            "--text-field for each"
        )
    train = [by_id[str(i)] for i in run.get("train_ids") or () if str(i) in by_id]
    return AuditData([by_id[i] for i in val_ids], train, str(merged["task"]))


def _lint_findings(rb: Rulebook, train: Sequence[Example], student: ChatClient) -> list[Finding]:
    """The rulebook lint (``pld.lint``) with the run's own token budget, counted on the
    student's tokenizer when it has one: the audit is where a reviewer reads everything."""
    return lint(rb, train, budget_tokens=run_budget(rb), count_tokens=token_counter(student.model))


def _layout(rb: Rulebook) -> str:
    """The layout the rulebook's prompt was rendered in (refused when the rules are not in
    the prompt at all: then there is nothing to leave out)."""
    used = (rb.decision or {}).get("used") or rb.decision or {}
    if not rb.cite_ids:
        why = used.get("prompt") or "the prompt holds no rules"
        raise ConfigError(
            f"the student is not shown this rulebook's rules ({why}): there is nothing to audit; "
            "audit a run whose decision keeps the rulebook"
        )
    return str(used.get("layout") or DEFAULT_LAYOUT)


def without(rules: InstructionSet, rule_id: str) -> InstructionSet:
    """The rule set minus one rule (a new version; the original is untouched)."""
    kept = tuple(i for i in rules.instructions if i.id != rule_id)
    return InstructionSet(kept, rules.version, rules.notes)


async def _pass(
    rb: Rulebook,
    prompt: Prompt,
    items: Sequence[Example],
    student: ChatClient,
    on_done: Callable[[], None] | None,
) -> list[Prediction]:
    """One validation pass with ``prompt``, calibrated as the rulebook is (its own prior)."""
    prior = None
    if rb.calibrate:
        prior = await label_prior(
            system_prompt=prompt.system,
            user_template=prompt.user_template,
            labels=rb.labels,
            student=student,
            shots=prompt.shots,
        )
    return await classify_with(
        prompt,
        example_items(items),
        rb.labels,
        student,
        calibrate=False,
        prior=prior,
        on_done=on_done,
    )


def rule_row(
    ins: Instruction,
    full: Sequence[Prediction],
    ablated: Sequence[Prediction],
    cited: Mapping[str, Any],
    labels: Sequence[str],
    settings: AuditSettings,
) -> dict[str, Any]:
    """One rule's worth on validation, paired with the full rulebook, with its provenance."""
    by_id = {p.id: p for p in ablated}
    pairs = [(p, by_id[p.id]) for p in full if p.id in by_id]
    fixed = [p.id for p, q in pairs if p.correct and not q.correct]
    broken = [p.id for p, q in pairs if q.correct and not p.correct]
    changed = [p.id for p, q in pairs if p.label != q.label]
    f1_with, f1_without = macro_f1(full, labels), macro_f1(ablated, labels)
    diff = paired_bootstrap_diff(  # the audit reports the CI and McNemar, not a permutation p
        full, ablated, labels, n=settings.resamples, seed=settings.seed, permutations=0
    )
    mc = mcnemar_counts({p.id: p.correct for p in full}, {p.id: p.correct for p in ablated})
    delta = f1_with - f1_without
    flags = []
    if not changed:
        flags.append("no_effect")
    elif not fixed and delta <= 1e-12:
        flags.append("no_gain")
    return {
        "id": ins.id,
        "topic": ins.topic,
        "text": ins.text,
        "labels": list(ins.labels),
        "cited": int(cited["by_rule"].get(ins.id, 0)),
        "cited_share": cited["by_rule"].get(ins.id, 0) / cited["n"] if cited["n"] else 0.0,
        "macro_f1_with": f1_with,
        "macro_f1_without": f1_without,
        "delta_macro_f1": delta,
        "delta_ci95": diff["ci95"],
        "p_with_better": diff["p_a_better"],
        "fixed": fixed,
        "broken": broken,
        "changed": len(changed),
        "mcnemar_p": mc["p_value"],
        "removal_candidate": bool(flags),
        "flags": flags,
        "provenance": {
            "n_sources": len(ins.sources),
            "sources": list(ins.sources),
            "history": list(ins.history),
        },
    }


async def _similarity(
    rules: Sequence[Instruction], embedder: EmbedClient | None
) -> tuple[NDArray[np.float64], str]:
    texts = [r.text for r in rules]
    if embedder is None or len(rules) < 2:
        return overlap.jaccard_matrix(texts), "jaccard"
    vecs = await embedder.embed([overlap.condition(t) for t in texts])
    return overlap.cosine_matrix(vecs), f"cosine ({embedder.identity})"


async def aaudit(
    rb: Rulebook,
    val: Sequence[Example],
    student: ChatClient,
    *,
    embedder: EmbedClient | None = None,
    train: Sequence[Example] = (),
    settings: AuditSettings | None = None,
    on_done: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The audit record (what audit.json holds) of ``rb`` on the validation items ``val``."""
    settings = settings or AuditSettings()
    if not val:
        raise ConfigError("an audit needs validation items; none were given")
    layout = _layout(rb)
    rules = list(rb.instructions.instructions)
    notes = []
    if render_layout(layout, rb.task, rb.instructions) != rb.prompt:
        notes.append(
            f"the saved prompt is not the {layout} layout's rendering of these rules (edited by "
            "hand, or an older pld); the ablations re-render that layout"
        )
    full = await rb.apredict(example_items(val), student, cite=True, on_done=on_done)
    cited = citation_summary(full, overlap.rule_label_map(rules))
    rows = []
    for ins in rules:
        prompt = render_layout(layout, rb.task, without(rb.instructions, ins.id))
        ablated = await _pass(rb, prompt, val, student, on_done)
        rows.append(rule_row(ins, full, ablated, cited, rb.labels, settings))
    sim, method = await _similarity(rules, embedder)
    mentions = overlap.label_mentions(rules, rb.labels)
    named = {m["rule"]: m["names"] for m in mentions}
    for row in rows:
        row["names_other_labels"] = named.get(row["id"], [])
    return {
        "audit_version": AUDIT_VERSION,
        "pld_version": __version__,
        "task": rb.task.name,
        "student": student.identity,
        "prompt_sha256": prompt_digest(rb),
        "layout": layout,
        "calibrated": rb.calibrate,
        "n_val": len(val),
        "val_ids": [e.id for e in val],
        "full": summary(full, rb.labels, ci=False) | {"citation": cited},
        "rules": rows,
        "conflicts": overlap.conflicts(
            rules,
            full,
            sim,
            method=method,
            threshold=settings.sim_threshold,
            min_confusions=settings.min_confusions,
        ),
        "similarity": {
            "method": method,
            "threshold": settings.sim_threshold,
            "pairs": overlap.similarity_pairs(rules, sim),
        },
        "label_mentions": mentions,
        "lint": [f.to_json() for f in _lint_findings(rb, train, student)],
        "notes": notes,
        "usage": student.accountant.by_role() | (embedder.accountant.by_role() if embedder else {}),
    }


def audit(
    rb: Rulebook,
    val: Sequence[Example],
    student: ChatClient,
    **kw: Any,
) -> dict[str, Any]:
    """``aaudit`` from synchronous code (see it for the options)."""
    return run_sync(aaudit(rb, val, student, **kw))


def save_audit(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write audit.json into the run directory, atomically, under the directory's lock (a
    fit running there is refused, not raced)."""
    with RunDir(run_dir, resume=True, lock=True) as rd:
        rd.write_json(AUDIT_FILE, dict(record))
        return rd.file(AUDIT_FILE)


def _audit_shape(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict) or not isinstance(d.get("rules"), list):
        raise TypeError("expected an audit object with a 'rules' list")
    for r in d["rules"]:
        str(r["id"]), float(r["delta_macro_f1"])
    return d


def load_audit(run_dir: str | Path) -> dict[str, Any] | None:
    """audit.json of a run directory (None when it has none; a damaged one is an error
    naming the fix)."""
    rd = RunDir(run_dir, read_only=True)
    return rd.load(AUDIT_FILE, _audit_shape) if rd.exists(AUDIT_FILE) else None
