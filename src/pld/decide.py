"""The student-side decision, fitted on the validation split instead of defaulted.

After the rulebook is final, a few prompt layouts (``pld.phases.layouts``) are each scored on
the validation items, once, from the raw label distributions; each pass also yields the
calibrated decision at the cost of three content-free calls (the prior divides the same
distributions). So every layout gives two candidates, raw and calibrated. The same candidates
are scored for the zero-shot prompt (layouts whose zero-shot prompt is byte-identical are
scored once), so the zero-shot baseline gets the same chance, and the rulebook is compared
with the best zero-shot decision before it is kept (the harm guard).

Choosing among candidates on ~30 items invites choosing noise, so the default (the ``default``
layout with ``DistillConfig.calibrate``) is kept unless the best candidate beats it in at
least ``decide_confidence`` of paired bootstrap resamples of the validation items (items
resampled jointly, seeded): ties and near-ties keep today's behaviour, and the behaviour
changes only when the data says so. The choice, every candidate's score and the reason are
saved in ``decision.json`` and used by every later prediction.

The harm guard compares the chosen rulebook decision with the chosen zero-shot decision on the
same validation items (paired bootstrap CI of the difference). If the rulebook's macro-F1 is
not higher, one plain sentence with both figures is recorded and shown by ``pld distill`` and
``pld report``; ``if_worse_than_zero_shot`` decides what is kept: ``keep`` and ``warn`` keep
the rulebook (``warn`` also logs the sentence), ``fallback`` keeps the zero-shot decision's
prompt (the rules stay on record in instructions.json and prompt.md).

Student calls: one validation pass per layout (the default layout's is the resolve stage's,
a cache hit) plus three content-free calls per layout; the same for each distinct zero-shot
layout. No teacher call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pld.config import GUARD_ACTIONS
from pld.errors import ConfigError
from pld.metrics import macro_f1, paired_bootstrap_diff
from pld.models.client import ChatClient
from pld.phases.classify import classify_with, label_prior
from pld.phases.layouts import DEFAULT_LAYOUT, render_layout
from pld.predictions import Prediction, example_items
from pld.prompts import Prompt
from pld.rulebook import Rulebook, calibration_record
from pld.rules import InstructionSet
from pld.tasks.base import Example, Task

RESAMPLES = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One way of asking the student: a layout and whether its scores are calibrated."""

    layout: str
    calibrate: bool

    @property
    def name(self) -> str:
        """How the candidate is named in records and sentences."""
        return f"{self.layout}, {'calibrated' if self.calibrate else 'raw'}"


@dataclass(frozen=True)
class LayoutPass:
    """One layout's validation pass: its prompt, the raw predictions and the content-free
    prior (None when the backend gives no label distribution)."""

    layout: str
    prompt: Prompt
    raw: list[Prediction]
    prior: dict[str, float] | None


def apply_prior(p: Prediction, prior: Mapping[str, float], labels: Sequence[str]) -> Prediction:
    """The calibrated prediction from a raw one: the label distribution divided by the prior
    and renormalised, as ``classify_one`` does with a prior."""
    if p.scores is None:
        return p
    w = [p.scores.get(lab, 0.0) / max(prior[lab], 1e-9) for lab in labels]
    total = sum(w) or 1.0
    scores = {lab: x / total for lab, x in zip(labels, w, strict=True)}
    label = max(labels, key=lambda lab: scores[lab])
    return replace(p, label=label, confidence=scores[label], scores=scores)


async def layout_pass(
    layout: str,
    task: Task,
    rules: InstructionSet | None,
    val: Sequence[Example],
    student: ChatClient,
    on_done: Callable[[], None] | None = None,
) -> LayoutPass:
    """Score ``layout`` once on ``val`` (raw) and measure its content-free prior."""
    prompt = render_layout(layout, task, rules)
    raw = await classify_with(
        prompt, example_items(val), task.labels, student, calibrate=False, on_done=on_done
    )
    prior = await label_prior(
        system_prompt=prompt.system,
        user_template=prompt.user_template,
        labels=task.labels,
        student=student,
        shots=prompt.shots,
    )
    return LayoutPass(layout, prompt, raw, prior)


async def choose_synthesis(
    task: Task,
    sets: Sequence[InstructionSet],
    items: Sequence[Example],
    student: ChatClient,
    *,
    calibrate: bool | None,
    on_done: Callable[[], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The index of the synthesized set to resolve from, and the record of why.

    Each set gets one ``default``-layout pass over ``items`` (validation, possibly with
    held-out training items; on validation alone the first set's pass is the one the resolve
    stage then makes, a cache hit), read raw and calibrated. A set's score is the
    reading the fit will use: ``calibrate`` as given, or, with ``None`` (the decide stage is
    on and picks the reading later), the better of the two. The best score wins; ties go to
    the lower index, so the paper's synthesis (index 0) is kept unless another one beats it.
    Unlike ``choose``, no bootstrap margin: the sets are alternatives of equal standing, not a
    default and challengers."""
    rows: list[dict[str, Any]] = []
    for k, rules in enumerate(sets):
        lp = await layout_pass(DEFAULT_LAYOUT, task, rules, items, student, on_done)
        readings = {
            c.calibrate: macro_f1(p, task.labels)
            for c, p in candidates_of([lp], task.labels).items()
        }
        wanted = [calibrate] if calibrate is not None and calibrate in readings else list(readings)
        rows.append(
            {
                "candidate": k,
                "instructions": len(rules),
                "macro_f1_raw": readings[False],
                "macro_f1_calibrated": readings.get(True),
                "score": max(readings[c] for c in wanted),
            }
        )
    best = max(range(len(rows)), key=lambda k: (rows[k]["score"], -k))
    for r in rows:
        r["chosen"] = r["candidate"] == best
    reading = (
        "the better of raw and calibrated"
        if calibrate is None
        else ("calibrated" if calibrate else "raw")
    )
    reason = (
        f"candidate {best} of {len(rows)} scored macro-F1 {rows[best]['score']:.3f} "
        f"({reading}, default layout, {len(items)} held-out items); candidate 0, the paper's "
        f"synthesis, scored {rows[0]['score']:.3f}"
    )
    return best, {"n_items": len(items), "reading": reading, "candidates": rows, "reason": reason}


def candidates_of(passes: Sequence[LayoutPass], labels: Sequence[str]) -> dict[Candidate, Any]:
    """Each pass's raw candidate and, when it has a prior, its calibrated one."""
    out: dict[Candidate, Any] = {}
    for lp in passes:
        out[Candidate(lp.layout, False)] = lp.raw
        if lp.prior is not None:
            out[Candidate(lp.layout, True)] = [apply_prior(p, lp.prior, labels) for p in lp.raw]
    return out


def choose(
    preds: Mapping[Candidate, Sequence[Prediction]],
    default: Candidate,
    labels: Sequence[str],
    *,
    confidence: float,
    seed: int = 0,
) -> dict[str, Any]:
    """The decision record: the best candidate replaces ``default`` only if it beats it in at
    least ``confidence`` of paired bootstrap resamples; ties go to ``default``."""
    if default not in preds:  # no label distribution: calibration is not available
        default = Candidate(default.layout, False)
    scores = {c: macro_f1(p, labels) for c, p in preds.items()}
    best = default
    for c in preds:  # insertion order: a tie never displaces an earlier candidate
        if scores[c] > scores[best] + 1e-12:
            best = c
    rows = []
    for c in preds:
        # the choice reads the bootstrap share only: no permutation test
        cmp = paired_bootstrap_diff(
            preds[c], preds[default], labels, n=RESAMPLES, seed=seed, permutations=0
        )
        rows.append(
            {
                "layout": c.layout,
                "calibrate": c.calibrate,
                "val_macro_f1": scores[c],
                "diff_vs_default": cmp["diff"],
                "diff_ci95": cmp["ci95"],
                "p_better_than_default": cmp["p_a_better"] if c != default else None,
            }
        )
    p_best = next(r["p_better_than_default"] for r in rows if _is(r, best))
    chosen, reason = _reason(best, default, scores, p_best, confidence)
    return {
        "layout": chosen.layout,
        "calibrate": chosen.calibrate,
        "default": {"layout": default.layout, "calibrate": default.calibrate},
        "val_macro_f1": scores[chosen],
        "candidates": rows,
        "scores": {c.name: scores[c] for c in preds},
        "reason": reason,
        "rule": f"switch from the default only if better in >= {confidence:.0%} of "
        f"{RESAMPLES} paired bootstrap resamples of the validation items",
        "n_val": len(next(iter(preds.values()), [])),
    }


def _is(row: Mapping[str, Any], c: Candidate) -> bool:
    return bool(row["layout"] == c.layout and row["calibrate"] == c.calibrate)


def _reason(
    best: Candidate,
    default: Candidate,
    scores: Mapping[Candidate, float],
    p_best: float | None,
    confidence: float,
) -> tuple[Candidate, str]:
    if best == default:
        return default, (
            f"the default ({default.name}) scored highest or tied on validation "
            f"(macro-F1 {scores[default]:.3f})"
        )
    figures = (
        f"{best.name} {scores[best]:.3f} vs the default ({default.name}) "
        f"{scores[default]:.3f}, better in {p_best or 0.0:.0%} of paired bootstrap resamples"
    )
    if p_best is not None and p_best >= confidence:
        return best, f"{figures} (needed {confidence:.0%})"
    return default, f"kept the default: {figures}, short of the {confidence:.0%} needed"


def _preds_of(
    passes: Sequence[LayoutPass], decision: Mapping[str, Any], labels: Sequence[str]
) -> tuple[LayoutPass, list[Prediction]]:
    lp = next(x for x in passes if x.layout == decision["layout"])
    if decision["calibrate"] and lp.prior is not None:
        return lp, [apply_prior(p, lp.prior, labels) for p in lp.raw]
    return lp, lp.raw


def harm_guard(
    rb_preds: Sequence[Prediction],
    zs_preds: Sequence[Prediction],
    zero_shot: Mapping[str, Any],
    labels: Sequence[str],
    *,
    action: str,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the rulebook's chosen decision with the best zero-shot decision on the same
    validation items (paired). "Not better" means the rulebook's macro-F1 does not exceed
    the zero-shot one; then ``sentence`` says so with both figures."""
    cmp = paired_bootstrap_diff(rb_preds, zs_preds, labels, n=RESAMPLES, seed=seed, permutations=0)
    rb_f1, zs_f1 = macro_f1(rb_preds, labels), macro_f1(zs_preds, labels)
    better = rb_f1 > zs_f1 + 1e-12
    sentence = None
    if not better:
        zs_name = Candidate(zero_shot["layout"], zero_shot["calibrate"]).name
        lo, hi = cmp["ci95"]
        sentence = (
            f"On the validation split the rulebook is not better than the student's zero-shot "
            f"prompt: macro-F1 {rb_f1:.3f} with the rulebook vs {zs_f1:.3f} zero-shot "
            f"({zs_name}; paired 95% CI of the difference [{lo:+.3f}, {hi:+.3f}], "
            f"n = {cmp['n']})."
        )
    return {
        "rulebook_val_macro_f1": rb_f1,
        "zero_shot_val_macro_f1": zs_f1,
        "diff": cmp["diff"],
        "diff_ci95": cmp["ci95"],
        "p_rulebook_better": cmp["p_a_better"],
        "better": better,
        "action": action,
        "fallback": bool(not better and action == "fallback"),
        "sentence": sentence,
    }


async def zero_shot_passes(
    task: Task,
    val: Sequence[Example],
    student: ChatClient,
    layouts: Sequence[str],
    on_done: Callable[[], None] | None = None,
) -> list[LayoutPass]:
    """The zero-shot prompt in each layout, skipping layouts whose zero-shot prompt is
    byte-identical to an earlier one's (without rules several layouts coincide)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for name in layouts:
        p = render_layout(name, task, None)
        if (p.system, p.user_template) in seen:
            continue
        seen.add((p.system, p.user_template))
        out.append(await layout_pass(name, task, None, val, student, on_done))
    return out


async def fit_zero_shot(
    task: Task,
    val: Sequence[Example],
    student: ChatClient,
    *,
    layouts: Sequence[str],
    calibrate: bool,
    confidence: float,
    seed: int = 0,
    on_done: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], list[LayoutPass]]:
    """The zero-shot decision on ``val`` (what ``evaluate`` uses for its zero-shot method)."""
    passes = await zero_shot_passes(task, val, student, layouts, on_done)
    preds = candidates_of(passes, task.labels)
    dec = choose(
        preds, Candidate(DEFAULT_LAYOUT, calibrate), task.labels, confidence=confidence, seed=seed
    )
    return dec, passes


@dataclass(frozen=True)
class DecideSettings:
    """The decide stage's settings (from ``DistillConfig``)."""

    layouts: tuple[str, ...]
    calibrate: bool
    confidence: float
    if_worse: str
    seed: int = 0


async def decide(
    rb: Rulebook,
    val: Sequence[Example],
    student: ChatClient,
    settings: DecideSettings,
    on_done: Callable[[], None] | None = None,
) -> Rulebook:
    """The rulebook with its fitted decision: the chosen layout's exact bytes, its
    calibration setting and prior, and the ``decision`` record (zero-shot decision and harm
    guard included). With ``if_worse = "fallback"`` and a rulebook no better than zero-shot,
    the zero-shot decision's prompt is what is kept (the rules stay on record)."""
    if settings.if_worse not in GUARD_ACTIONS:
        raise ConfigError(f"if_worse_than_zero_shot must be one of {', '.join(GUARD_ACTIONS)}")
    task, labels = rb.task, rb.labels
    layouts = tuple(dict.fromkeys((DEFAULT_LAYOUT, *settings.layouts)))
    passes = [
        await layout_pass(name, task, rb.instructions, val, student, on_done) for name in layouts
    ]
    if passes[0].prompt != rb.prompt:
        raise AssertionError("the default layout must render the rulebook's own prompt")
    default = Candidate(DEFAULT_LAYOUT, settings.calibrate)
    dec = choose(
        candidates_of(passes, labels),
        default,
        labels,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    zs, zs_passes = await fit_zero_shot(
        task,
        val,
        student,
        layouts=layouts,
        calibrate=settings.calibrate,
        confidence=settings.confidence,
        seed=settings.seed,
        on_done=on_done,
    )
    lp, rb_preds = _preds_of(passes, dec, labels)
    zlp, zs_preds = _preds_of(zs_passes, zs, labels)
    guard = harm_guard(rb_preds, zs_preds, zs, labels, action=settings.if_worse)
    dec.update(zero_shot=zs, guard=guard)
    if guard["sentence"] and settings.if_worse != "keep":
        log.warning("%s (if_worse_than_zero_shot = %s)", guard["sentence"], settings.if_worse)
    kept, kept_cal = (zlp, zs["calibrate"]) if guard["fallback"] else (lp, dec["calibrate"])
    dec["used"] = {
        "prompt": "zero-shot (fallback)" if guard["fallback"] else "rulebook",
        "layout": kept.layout,
        "calibrate": kept_cal,
    }
    return replace(
        rb,
        system_prompt=kept.prompt.system,
        user_template=kept.prompt.user_template,
        calibrate=kept_cal,
        calibration=calibration_record(kept.prior) if kept.prior is not None else rb.calibration,
        decision=dec,
    )
