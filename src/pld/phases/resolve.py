"""Phase 3 — conflict resolution: a closed loop in which the teacher repairs the rulebook.

Each round: classify a training sample with the current best set; give the teacher the
instruction list (with ids), the failures and a sample of successes (the paper: correct
examples are "critical to avoid performance degradation"); it answers with explicit edits;
apply them to get a candidate; score the candidate on the validation split; accept only if
macro-F1 improves (a tie goes to the shorter prompt). Stop after ``patience`` rounds without
improvement or ``max_rounds``; the best set is kept.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pld.guards import rule_problem
from pld.metrics import macro_f1
from pld.models.client import ChatClient
from pld.phases._teacher import ask_json
from pld.phases.classify import classify
from pld.predictions import Prediction, example_items
from pld.prompts import resolve_prompt, resolve_schema, rules_listing, system_prompt_for
from pld.rulecheck import condition_words, copied_span
from pld.rules import Edit, InstructionSet
from pld.tasks.base import Example, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolveSettings:
    """The loop's bounds and sample sizes (from ``DistillConfig``)."""

    max_rounds: int = 3
    patience: int = 1
    train_sample: int = 48
    n_failures: int = 12
    n_successes: int = 6
    max_tokens: int = 700
    max_attempts: int = 2
    seed: int = 0
    calibrate: bool = True


async def score(
    task: Task,
    rules: InstructionSet | None,
    items: Sequence[Example],
    student: ChatClient,
    on_done: Callable[[], None] | None = None,
    *,
    calibrate: bool = True,
) -> tuple[float, list[Prediction]]:
    """Macro-F1 of ``rules`` on ``items`` and the predictions behind it."""
    preds = await classify(
        example_items(items),
        system_prompt=system_prompt_for(task, rules),
        user_template=task.input_template,
        labels=task.labels,
        student=student,
        calibrate=calibrate,
        on_done=on_done,
    )
    return macro_f1(preds, task.labels), preds


def parse_edits(obj: dict[str, Any]) -> tuple[str, list[Edit]]:
    """The teacher's reply as (diagnosis, edits); raises ValueError on a malformed edit."""
    edits_raw = obj.get("edits")
    if not isinstance(edits_raw, list):
        raise ValueError('"edits" must be a list')
    edits: list[Edit] = []
    for e in edits_raw:
        if not isinstance(e, dict) or e.get("op") not in ("add", "edit", "remove", "merge"):
            raise ValueError(f"invalid edit {e!r}")
        edits.append(
            Edit(
                op=str(e["op"]),
                id=str(e["id"]) if e.get("id") is not None else None,
                ids=tuple(str(x) for x in e.get("ids") or ()),
                topic=str(e["topic"]) if e.get("topic") is not None else None,
                text=str(e["text"]) if e.get("text") is not None else None,
                labels=tuple(str(x) for x in e.get("labels") or ()),
            )
        )
    return str(obj.get("diagnosis", "")), edits


def drop_copies(
    edits: Sequence[Edit], shown: Sequence[str], labels: Sequence[str] = ()
) -> tuple[list[Edit], list[dict[str, Any]]]:
    """Rules must stay general and executable: an edit whose text copies a shown input
    verbatim (6+ words), or states no condition, is not applied, and is reported."""
    kept: list[Edit] = []
    dropped: list[dict[str, Any]] = []
    for e in edits:
        span = next((sp for t in shown if (sp := copied_span(e.text or "", t))), None)
        if span is not None:
            why = f'copies an input verbatim ("{span}")'
        elif e.op in ("add", "edit", "merge") and len(condition_words(e.text or "", labels)) < 3:
            why = "states no condition"
        elif e.op in ("add", "edit", "merge") and (p := rule_problem(e.text or "", shown, labels)):
            why = p
        else:
            kept.append(e)
            continue
        dropped.append({"edit": e.to_json(), "applied": False, "why": why})
    return kept, dropped


async def propose_edits(
    task: Task,
    rules: InstructionSet,
    failures: Sequence[Prediction],
    successes: Sequence[Prediction],
    by_id: dict[str, Example],
    teacher: ChatClient,
    settings: ResolveSettings,
    round_no: int,
) -> tuple[str, list[Edit], str | None]:
    """The teacher's diagnosis and edits for one round, or the reason there are none."""
    prompt = resolve_prompt(
        task.description,
        task.labels,
        task.label_descriptions,
        rules_listing(rules),
        [(task.render(by_id[p.id]), p.gold or "", p.label or "(invalid answer)") for p in failures],
        [(task.render(by_id[p.id]), p.gold or "") for p in successes],
    )
    ans = await ask_json(
        teacher,
        prompt,
        parse_edits,
        schema=resolve_schema(task.labels),
        max_tokens=settings.max_tokens,
        max_attempts=settings.max_attempts,
        seed=round_no * 100,
    )
    if ans.value is None:
        return "", [], ans.error
    diagnosis, edits = ans.value
    return diagnosis, edits, None


def _train_sample(
    train: Sequence[Example], settings: ResolveSettings, round_no: int
) -> tuple[random.Random, list[Example]]:
    """The round's seeded training sample, and the generator that also picks what is shown."""
    rng = random.Random(settings.seed * 1000 + round_no)
    sample = list(train)
    rng.shuffle(sample)
    return rng, sample[: settings.train_sample]


def _baseline(f1: float, prompt_chars: int, n_rules: int) -> dict[str, Any]:
    """Round 0: the synthesized set, scored as the loop's starting point."""
    return {
        "round": 0,
        "accepted": True,
        "val_macro_f1": f1,
        "prompt_chars": prompt_chars,
        "n_rules": n_rules,
        "note": "synthesized set (baseline of the loop)",
    }


def _record(
    rounds: list[dict[str, Any]],
    rec: dict[str, Any],
    on_round: Callable[[dict[str, Any]], None] | None,
) -> None:
    rounds.append(rec)
    if on_round:
        on_round(rec)


def _candidate(
    task: Task,
    best: InstructionSet,
    edits: Sequence[Edit],
    shown: Sequence[str],
    rec: dict[str, Any],
    *,
    tag: str,
) -> InstructionSet | None:
    """The edited set worth scoring, or None (and why, in ``rec``): edits that quote an
    input are dropped, and a candidate that loses a label's coverage is not scored."""
    kept, copied = drop_copies(edits, shown, task.labels)
    cand, outcomes = best.apply(kept, tag=tag, labels=task.labels)
    rec["edits"] = outcomes + copied
    lost = [
        lab
        for lab in task.labels
        if lab in best.labels_covered() and lab not in cand.labels_covered()
    ]
    if not any(o["applied"] for o in outcomes):
        rec.update(accepted=False, note="no edit could be applied")
        return None
    if lost or not len(cand):
        rec.update(accepted=False, note=f"candidate drops label coverage {lost}")
        return None
    return cand


async def resolve(
    task: Task,
    start: InstructionSet,
    train: Sequence[Example],
    val: Sequence[Example],
    student: ChatClient,
    teacher: ChatClient,
    settings: ResolveSettings,
    *,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> tuple[InstructionSet, list[dict[str, Any]], list[Prediction]]:
    """Return (best set, round records, best set's validation predictions)."""
    by_id = {e.id: e for e in train}
    best = start
    best_f1, best_preds = await score(
        task, best, val, student, on_done, calibrate=settings.calibrate
    )
    best_len = len(system_prompt_for(task, best))
    rounds: list[dict[str, Any]] = []
    _record(rounds, _baseline(best_f1, best_len, len(best)), on_round)
    stale = 0
    for r in range(1, settings.max_rounds + 1):
        rng, sample = _train_sample(train, settings, r)
        _, tpreds = await score(task, best, sample, student, on_done, calibrate=settings.calibrate)
        fails = [p for p in tpreds if not p.correct]
        oks = [p for p in tpreds if p.correct]
        rec: dict[str, Any] = {
            "round": r,
            "train_sample": len(sample),
            "train_failures": len(fails),
            "train_macro_f1": macro_f1(tpreds, task.labels),
        }
        if not fails:
            rec.update(accepted=False, note="no training failures to learn from; stopped")
            _record(rounds, rec, on_round)
            break
        fail_shown = rng.sample(fails, min(settings.n_failures, len(fails)))
        ok_shown = rng.sample(oks, min(settings.n_successes, len(oks)))
        diagnosis, edits, err = await propose_edits(
            task, best, fail_shown, ok_shown, by_id, teacher, settings, r
        )
        rec.update(
            diagnosis=diagnosis,
            failures_shown=[p.id for p in fail_shown],
            successes_shown=[p.id for p in ok_shown],
        )
        if err is not None:
            rec.update(accepted=False, teacher_error=err, edits=[], note="teacher reply invalid")
        else:
            shown = [task.render(by_id[p.id]) for p in (*fail_shown, *ok_shown)]
            cand = _candidate(task, best, edits, shown, rec, tag=f"round {r}")
            if cand is not None:
                f1, preds = await score(
                    task, cand, val, student, on_done, calibrate=settings.calibrate
                )
                clen = len(system_prompt_for(task, cand))
                better = f1 > best_f1 + 1e-9 or (abs(f1 - best_f1) <= 1e-9 and clen < best_len)
                rec.update(val_macro_f1=f1, prompt_chars=clen, n_rules=len(cand), accepted=better)
                if better:
                    best, best_f1, best_preds, best_len = cand, f1, preds, clen
        if rec.get("accepted"):
            stale = 0
        else:
            stale += 1
        rec["best_val_macro_f1"] = best_f1
        _record(rounds, rec, on_round)
        if stale >= settings.patience:
            break
    return best, rounds, best_preds
