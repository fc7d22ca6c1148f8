"""Phase 3 — conflict resolution: a closed loop in which the teacher repairs the rulebook.

Each round: classify a training sample with the current best set; draw ``candidates``
different samples of its failures and successes (the paper: correct examples are "critical to
avoid performance degradation"); for each, the teacher sees the instruction list (with ids)
and answers with explicit edits, which give one candidate set. Every candidate is scored on a
*pool*: the validation split plus up to ``pool`` training items that no candidate was shown
this round. Acceptance is paired, item by item against the current best: a candidate must fix
at least ``min_net`` more pool items than it breaks and must not lower the pool's macro-F1 (a
tie is rejected — 30 validation items cannot tell a tie from noise); among accepted candidates
the one with the largest net gain wins. Stop after ``patience`` rounds without acceptance or
``max_rounds``; the best set is kept. Each round's record says what each candidate changed,
what it fixed and broke, and what the winner bought (validation and pool macro-F1, before and
after).

Candidates are judged under the scores the final rulebook will most likely be read with: when
the decide stage is on, the loop first picks raw or calibrated scores for the synthesized set
on validation, by decide's own rule (``choose_calibration``), and records the choice in round 0.

Teacher budget: at most ``max_rounds * candidates * max_attempts`` requests (defaults 3 x 2 x
2 = 12; one per candidate when the reply is valid). The first candidate of round 1 sends
exactly the request the one-candidate loop sent, so recorded teacher replies stay valid.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pld._async import gather_all
from pld.decide import Candidate, candidates_of, choose, layout_pass
from pld.metrics import macro_f1
from pld.models.client import ChatClient
from pld.phases._teacher import ask_json
from pld.phases.classify import classify
from pld.phases.layouts import DEFAULT_LAYOUT
from pld.predictions import Prediction, example_items
from pld.prompts import resolve_prompt, resolve_schema, rules_listing, system_prompt_for
from pld.rulecheck import condition_words, copied_span, rule_problem
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
    candidates: int = 2
    pool: int = 48
    min_net: int = 2
    # When set (the decide stage is on), the loop first picks raw vs. calibrated scores for the
    # synthesized set on validation with decide's rule and this confidence, and judges every
    # candidate under that choice: the scores the final rulebook will most likely be read with.
    choose_calibration: float | None = None
    name_cues: bool = False  # the teacher may name recurring cue terms (pld.prompts)


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
    candidate: int = 0,
) -> tuple[str, list[Edit], str | None]:
    """The teacher's diagnosis and edits for one round, or the reason there are none."""
    prompt = resolve_prompt(
        task.description,
        task.labels,
        task.label_descriptions,
        rules_listing(rules),
        [(task.render(by_id[p.id]), p.gold or "", p.label or "(invalid answer)") for p in failures],
        [(task.render(by_id[p.id]), p.gold or "") for p in successes],
        settings.name_cues,
    )
    ans = await ask_json(
        teacher,
        prompt,
        parse_edits,
        schema=resolve_schema(task.labels),
        max_tokens=settings.max_tokens,
        max_attempts=settings.max_attempts,
        seed=round_no * 100 + 10 * candidate,
    )
    if ans.value is None:
        return "", [], ans.error
    diagnosis, edits = ans.value
    return diagnosis, edits, None


def _round_draw(
    train: Sequence[Example], settings: ResolveSettings, round_no: int
) -> tuple[random.Random, list[Example]]:
    """The round's seeded shuffle of the training set (its head is the classified sample),
    and the generator that also picks what the first candidate is shown."""
    rng = random.Random(settings.seed * 1000 + round_no)
    order = list(train)
    rng.shuffle(order)
    return rng, order


def _shown(
    fails: Sequence[Prediction],
    oks: Sequence[Prediction],
    settings: ResolveSettings,
    rng: random.Random,
    round_no: int,
    candidate: int,
) -> tuple[list[Prediction], list[Prediction]]:
    """What one candidate's teacher request shows: the first candidate draws from the round's
    generator (the one-candidate loop's draw), the others from their own seeded generator."""
    g = rng if candidate == 0 else random.Random(settings.seed * 1000 + round_no + 7919 * candidate)
    fail_shown = g.sample(list(fails), min(settings.n_failures, len(fails)))
    ok_shown = g.sample(list(oks), min(settings.n_successes, len(oks)))
    return fail_shown, ok_shown


def paired_gain(best: Sequence[Prediction], cand: Sequence[Prediction]) -> dict[str, int]:
    """Items the candidate fixes (best wrong, candidate right) and breaks (the reverse), paired
    by id over the items both scored."""
    right = {p.id: p.correct for p in best}
    fixes = sum(1 for p in cand if p.id in right and p.correct and not right[p.id])
    breaks = sum(1 for p in cand if p.id in right and not p.correct and right[p.id])
    return {"fixes": fixes, "breaks": breaks, "net": fixes - breaks}


def accepts(gain: Mapping[str, int], cand_f1: float, best_f1: float, min_net: int) -> bool:
    """Paired acceptance: at least ``min_net`` more items fixed than broken, and the pool's
    macro-F1 not lower (so a gain on the majority class cannot hide a lost minority one)."""
    return gain["net"] >= max(1, min_net) and cand_f1 >= best_f1 - 1e-9


@dataclass
class _Best:
    """The current best set and its validation figures."""

    rules: InstructionSet
    val_f1: float
    val_preds: list[Prediction]
    prompt_chars: int


@dataclass
class _Proposal:
    """One candidate of a round: what it was shown, its record and its set (None when the
    teacher gave nothing usable)."""

    index: int
    shown_ids: list[str]
    rec: dict[str, Any]
    rules: InstructionSet | None = None
    preds: list[Prediction] | None = None


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


async def _propose(
    task: Task,
    best: InstructionSet,
    shown: tuple[list[Prediction], list[Prediction]],
    by_id: dict[str, Example],
    teacher: ChatClient,
    settings: ResolveSettings,
    round_no: int,
    index: int,
) -> _Proposal:
    """One teacher request and the candidate set its edits give."""
    fail_shown, ok_shown = shown
    diagnosis, edits, err = await propose_edits(
        task, best, fail_shown, ok_shown, by_id, teacher, settings, round_no, index
    )
    rec: dict[str, Any] = {
        "candidate": index,
        "diagnosis": diagnosis,
        "failures_shown": [p.id for p in fail_shown],
        "successes_shown": [p.id for p in ok_shown],
    }
    ids = [p.id for p in (*fail_shown, *ok_shown)]
    if err is not None:
        rec.update(accepted=False, teacher_error=err, edits=[], note="teacher reply invalid")
        return _Proposal(index, ids, rec)
    texts = [task.render(by_id[i]) for i in ids]
    cand = _candidate(task, best, edits, texts, rec, tag=f"round {round_no}")
    return _Proposal(index, ids, rec, cand)


async def _pool_baseline(
    task: Task,
    best: _Best,
    pool_train: Sequence[Example],
    known: Mapping[str, Prediction],
    student: ChatClient,
    settings: ResolveSettings,
    on_done: Callable[[], None] | None,
) -> list[Prediction]:
    """The best set's predictions on the pool: validation (already scored) and the held-back
    training items (those in the classified sample are reused, the rest scored)."""
    missing = [e for e in pool_train if e.id not in known]
    scored = {}
    if missing:
        _, preds = await score(
            task, best.rules, missing, student, on_done, calibrate=settings.calibrate
        )
        scored = {p.id: p for p in preds}
    return [*best.val_preds, *((known.get(e.id) or scored[e.id]) for e in pool_train)]


async def _judge(
    task: Task,
    props: Sequence[_Proposal],
    pool: tuple[Sequence[Example], Sequence[Example]],
    best_pool: Sequence[Prediction],
    student: ChatClient,
    settings: ResolveSettings,
    on_done: Callable[[], None] | None,
) -> _Proposal | None:
    """Score every candidate on the pool, record its paired gain, return the winner."""
    val, pool_train = pool
    best_pool_f1 = macro_f1(best_pool, task.labels)
    winner: tuple[tuple[int, float, int], _Proposal] | None = None
    for pr in props:
        if pr.rules is None:
            continue
        f1, preds = await score(
            task, pr.rules, [*val, *pool_train], student, on_done, calibrate=settings.calibrate
        )
        gain = paired_gain(best_pool, preds)
        clen = len(system_prompt_for(task, pr.rules))
        ok = accepts(gain, f1, best_pool_f1, settings.min_net)
        pr.preds = preds[: len(val)]
        pr.rec.update(
            val_macro_f1=macro_f1(pr.preds, task.labels),
            pool_macro_f1=f1,
            prompt_chars=clen,
            n_rules=len(pr.rules),
            accepted=False,
            passes_acceptance=ok,
            **gain,
        )
        key = (gain["net"], f1, -clen)
        if ok and (winner is None or key > winner[0]):
            winner = (key, pr)
    if winner is None:
        return None
    winner[1].rec["accepted"] = True
    return winner[1]


def _why_not(rec: Mapping[str, Any], min_net: int) -> str:
    """Why one candidate was not accepted, in a few words."""
    if "net" not in rec:
        return str(rec.get("note", "not scored"))
    if rec["net"] < max(1, min_net):
        return f"fixed {rec['fixes']}, broke {rec['breaks']} (needs net >= {max(1, min_net)})"
    return "lowered the pool's macro-F1"


def _round_record(
    head: dict[str, Any],
    props: Sequence[_Proposal],
    win: _Proposal | None,
    before: _Best,
    min_net: int,
) -> dict[str, Any]:
    """The round's record: every candidate, and (mirrored at top level, as the one-candidate
    loop wrote them) the winner's — or the first candidate's — diagnosis, edits and scores."""
    shown = win or props[0]
    keys = (
        *("diagnosis", "failures_shown", "successes_shown", "edits", "teacher_error"),
        *("val_macro_f1", "pool_macro_f1", "prompt_chars", "n_rules", "note"),
    )
    rec = {**head, **{k: shown.rec[k] for k in keys if k in shown.rec}}
    rec["accepted"] = win is not None
    rec["chosen_candidate"] = win.index if win is not None else None
    rec["candidates"] = [p.rec for p in props]
    if win is not None:
        rec["bought"] = {
            "changed": [e for e in win.rec.get("edits", []) if e.get("applied")],
            "fixes": win.rec["fixes"],
            "breaks": win.rec["breaks"],
            "pool_macro_f1": [head["pool_macro_f1_before"], win.rec["pool_macro_f1"]],
            "val_macro_f1": [before.val_f1, win.rec["val_macro_f1"]],
        }
    else:
        rec["note"] = "no candidate accepted: " + "; ".join(
            f"candidate {p.index}: {_why_not(p.rec, min_net)}" for p in props
        )
    return rec


async def _round(
    task: Task,
    best: _Best,
    data: tuple[Sequence[Example], Sequence[Example]],
    clients: tuple[ChatClient, ChatClient],
    settings: ResolveSettings,
    r: int,
    on_done: Callable[[], None] | None,
) -> tuple[dict[str, Any], _Proposal | None, bool]:
    """One round: (record, winning proposal or None, whether to stop)."""
    (train, val), (student, teacher) = data, clients
    rng, order = _round_draw(train, settings, r)
    sample = order[: settings.train_sample]
    _, tpreds = await score(
        task, best.rules, sample, student, on_done, calibrate=settings.calibrate
    )
    fails = [p for p in tpreds if not p.correct]
    oks = [p for p in tpreds if p.correct]
    head: dict[str, Any] = {
        "round": r,
        "train_sample": len(sample),
        "train_failures": len(fails),
        "train_macro_f1": macro_f1(tpreds, task.labels),
    }
    if not fails:
        head.update(accepted=False, note="no training failures to learn from; stopped")
        return head, None, True
    by_id = {e.id: e for e in train}
    draws = [_shown(fails, oks, settings, rng, r, c) for c in range(settings.candidates)]
    props = await gather_all(
        _propose(task, best.rules, d, by_id, teacher, settings, r, c) for c, d in enumerate(draws)
    )
    seen = {i for p in props for i in p.shown_ids} | {e.id for e in val}
    pool_train = [e for e in order if e.id not in seen][: settings.pool]
    known = {p.id: p for p in tpreds}
    best_pool = await _pool_baseline(task, best, pool_train, known, student, settings, on_done)
    head["pool"] = {
        "val": len(val),
        "train": len(pool_train),
        "train_ids": [e.id for e in pool_train],
    }
    head["pool_macro_f1_before"] = macro_f1(best_pool, task.labels)
    win = await _judge(task, props, (val, pool_train), best_pool, student, settings, on_done)
    return _round_record(head, props, win, best, settings.min_net), win, False


async def _choose_scoring(
    task: Task,
    start: InstructionSet,
    val: Sequence[Example],
    student: ChatClient,
    settings: ResolveSettings,
    on_done: Callable[[], None] | None,
) -> tuple[ResolveSettings, dict[str, Any] | None, list[Prediction] | None]:
    """The settings the loop judges with, the record of how its scoring was chosen, and the
    start set's validation predictions under that choice (None: not chosen here).

    Judging candidates under calibrated scores when the decide stage will then pick raw ones
    (or the reverse) accepts and rejects edits by a decision nobody uses: with a 1.5B student
    calibration moved validation macro-F1 by 0.1-0.3 in either direction. Both readings come
    from one raw pass (decide's own ``layout_pass``), so the choice costs only the
    content-free calls."""
    if settings.choose_calibration is None:
        return settings, None, None
    lp = await layout_pass(DEFAULT_LAYOUT, task, start, val, student, on_done)
    preds = candidates_of([lp], task.labels)
    default = Candidate(DEFAULT_LAYOUT, settings.calibrate)
    if default not in preds:  # no distribution: nothing to choose
        return settings, None, None
    dec = choose(
        preds, default, task.labels, confidence=settings.choose_calibration, seed=settings.seed
    )
    rec = {"calibrate": dec["calibrate"], "scores": dec["scores"], "reason": dec["reason"]}
    kept = list(preds[Candidate(DEFAULT_LAYOUT, bool(dec["calibrate"]))])
    return replace(settings, calibrate=bool(dec["calibrate"])), rec, kept


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
    settings, scoring, preds = await _choose_scoring(task, start, val, student, settings, on_done)
    if preds is None:
        f1, preds = await score(task, start, val, student, on_done, calibrate=settings.calibrate)
    else:
        f1 = macro_f1(preds, task.labels)
    best = _Best(start, f1, preds, len(system_prompt_for(task, start)))
    rounds: list[dict[str, Any]] = []
    base = _baseline(best.val_f1, best.prompt_chars, len(start))
    if scoring is not None:
        base["scoring"] = scoring
    _record(rounds, base, on_round)
    stale = 0
    for r in range(1, settings.max_rounds + 1):
        rec, win, stop = await _round(
            task, best, (train, val), (student, teacher), settings, r, on_done
        )
        if win is not None and win.rules is not None and win.preds is not None:
            best = _Best(win.rules, rec["val_macro_f1"], win.preds, rec["prompt_chars"])
            stale = 0
        elif not stop:
            stale += 1
        rec["best_val_macro_f1"] = best.val_f1
        _record(rounds, rec, on_round)
        if stop or stale >= settings.patience:
            break
    return best.rules, rounds, best.val_preds
