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
from pld.models.base import GenOptions, Message
from pld.models.client import ChatClient
from pld.phases.classify import Prediction, classify
from pld.phases.extract import condition_words, copied_span
from pld.prompts import TEACHER_SYSTEM, parse_json_object, resolve_prompt, resolve_schema
from pld.rules import Edit, InstructionSet, render_system_prompt
from pld.tasks.base import Example, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolveSettings:
    max_rounds: int = 3
    patience: int = 1
    train_sample: int = 48
    n_failures: int = 12
    n_successes: int = 6
    max_tokens: int = 700
    max_attempts: int = 2
    seed: int = 0
    calibrate: bool = True


def system_prompt_for(task: Task, rules: InstructionSet | None) -> str:
    return render_system_prompt(task.description, task.labels, task.label_descriptions, rules)


async def score(
    task: Task,
    rules: InstructionSet | None,
    items: Sequence[Example],
    student: ChatClient,
    on_done: Callable[[], None] | None = None,
    *,
    calibrate: bool = True,
) -> tuple[float, list[Prediction]]:
    preds = await classify(
        [(e.id, e.fields, e.label) for e in items],
        system_prompt=system_prompt_for(task, rules),
        user_template=task.input_template,
        labels=task.labels,
        student=student,
        calibrate=calibrate,
        on_done=on_done,
    )
    return macro_f1(preds, task.labels), preds


def _listing(rules: InstructionSet) -> str:
    return "\n".join(
        f"[{i.id}] ({', '.join(i.labels) or '-'}) {i.topic}: {i.text}" for i in rules.instructions
    )


def parse_edits(obj: dict[str, Any]) -> tuple[str, list[Edit]]:
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
    prompt = resolve_prompt(
        task.description,
        task.labels,
        task.label_descriptions,
        _listing(rules),
        [(task.render(by_id[p.id]), p.gold or "", p.label or "(invalid answer)") for p in failures],
        [(task.render(by_id[p.id]), p.gold or "") for p in successes],
    )
    messages = [Message("system", TEACHER_SYSTEM), Message("user", prompt)]
    reason = ""
    for attempt in range(settings.max_attempts):
        comp = await teacher.complete(
            messages,
            GenOptions(
                max_tokens=settings.max_tokens,
                temperature=0.0 if attempt == 0 else 0.7,
                seed=round_no * 100 + attempt,
                json_schema=resolve_schema(task.labels),
            ),
            sample=attempt,
        )
        try:
            diagnosis, edits = parse_edits(parse_json_object(comp.text))
            return diagnosis, edits, None
        except (ValueError, TypeError) as e:
            reason = f"{type(e).__name__}: {e}"
    return "", [], reason


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
    rounds: list[dict[str, Any]] = [
        {
            "round": 0,
            "accepted": True,
            "val_macro_f1": best_f1,
            "prompt_chars": best_len,
            "n_rules": len(best),
            "note": "synthesized set (baseline of the loop)",
        }
    ]
    if on_round:
        on_round(rounds[-1])
    stale = 0
    for r in range(1, settings.max_rounds + 1):
        rng = random.Random(settings.seed * 1000 + r)
        sample = list(train)
        rng.shuffle(sample)
        sample = sample[: settings.train_sample]
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
            rounds.append(rec)
            if on_round:
                on_round(rec)
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
            edits, copied = drop_copies(edits, shown, task.labels)
            cand, outcomes = best.apply(edits, tag=f"round {r}", labels=task.labels)
            rec["edits"] = outcomes + copied
            lost = [
                lab
                for lab in task.labels
                if lab in best.labels_covered() and lab not in cand.labels_covered()
            ]
            if not any(o["applied"] for o in outcomes):
                rec.update(accepted=False, note="no edit could be applied")
            elif lost or not len(cand):
                rec.update(accepted=False, note=f"candidate drops label coverage {lost}")
            else:
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
        rounds.append(rec)
        if on_round:
            on_round(rec)
        if stale >= settings.patience:
            break
    return best, rounds, best_preds
