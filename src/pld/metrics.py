"""Scores over predictions. An invalid output counts as wrong (a miss for its gold class,
a false positive for no class) and is reported separately, never dropped."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pld.predictions import INVALID_RULE, NO_RULE, OVERFLOW, Prediction

INVALID = "<invalid>"


def _pairs(preds: Sequence[Prediction]) -> tuple[list[str], list[str]]:
    gold = [p.gold or "" for p in preds]
    pred = [p.label if p.label is not None else INVALID for p in preds]
    return gold, pred


def per_class(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per label (invalid answers count as misses)."""
    out: dict[str, Any] = {}
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g == lab and p == lab)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if g != lab and p == lab)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g == lab and p != lab)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    return out


def macro_f1_from(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> float:
    """Macro-F1 over the labels present in gold (as scikit-learn does with labels=present)."""
    if not gold:
        return 0.0
    present = [lab for lab in labels if lab in set(gold)]
    pc = per_class(gold, pred, present)
    return float(np.mean([pc[lab]["f1"] for lab in present])) if present else 0.0


def macro_f1(preds: Sequence[Prediction], labels: Sequence[str]) -> float:
    """The headline score: macro-F1 over the labels present in gold."""
    gold, pred = _pairs(preds)
    return macro_f1_from(gold, pred, labels)


def bootstrap_ci(
    preds: Sequence[Prediction], labels: Sequence[str], *, n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Seeded percentile-bootstrap 95% interval of macro-F1 (items resampled)."""
    gold, pred = _pairs(preds)
    if not gold:
        return (0.0, 0.0)
    rng = random.Random(seed)
    k = len(gold)
    scores = []
    for _ in range(n):
        idx = [rng.randrange(k) for _ in range(k)]
        scores.append(macro_f1_from([gold[i] for i in idx], [pred[i] for i in idx], labels))
    return float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5))


def confusion(preds: Sequence[Prediction], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """gold -> predicted -> count, with an ``<invalid>`` column."""
    gold, pred = _pairs(preds)
    cols = [*labels, INVALID]
    m = {g: dict.fromkeys(cols, 0) for g in labels}
    for g, p in zip(gold, pred, strict=True):
        if g in m:
            m[g][p if p in m[g] else INVALID] += 1
    return m


def summary(
    preds: Sequence[Prediction], labels: Sequence[str], *, ci: bool = True
) -> dict[str, Any]:
    """Every figure pld reports for one set of predictions (JSON-able)."""
    gold, pred = _pairs(preds)
    lat = [p.latency_s for p in preds if not p.cached] or [p.latency_s for p in preds]
    n = len(preds)
    out: dict[str, Any] = {
        "n": n,
        "macro_f1": macro_f1_from(gold, pred, labels),
        "accuracy": (sum(1 for g, p in zip(gold, pred, strict=True) if g == p) / n) if n else 0.0,
        "invalid": sum(1 for p in preds if p.label is None),
        "context_overflow": sum(1 for p in preds if p.raw.startswith(OVERFLOW)),
        "per_class": per_class(gold, pred, labels),
        "confusion": confusion(preds, labels),
        "latency_p50_s": float(np.percentile(lat, 50)) if lat else 0.0,
        "latency_p95_s": float(np.percentile(lat, 95)) if lat else 0.0,
        "prompt_tokens_per_item": (sum(p.prompt_tokens for p in preds) / n) if n else 0.0,
        "completion_tokens_per_item": (sum(p.completion_tokens for p in preds) / n) if n else 0.0,
    }
    if ci:
        lo, hi = bootstrap_ci(preds, labels)
        out["macro_f1_ci95"] = [lo, hi]
    return out


def _rows_macro_f1(g: np.ndarray, p: np.ndarray, n_labels: int) -> Any:
    """Macro-F1 of every row of (gold, pred) at once, over the labels present in each row's
    gold, as ``macro_f1_from`` computes it. Labels are integer codes; ``n_labels`` (and
    above) marks an answer that is no label."""
    f1s, present = [], []
    for lab in range(n_labels):
        gl, pl = g == lab, p == lab
        tp = (gl & pl).sum(axis=1)
        fp = (~gl & pl).sum(axis=1)
        fn = (gl & ~pl).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1s.append(f1)
        present.append(gl.any(axis=1))
    f1m, pm = np.array(f1s), np.array(present)
    n_present = pm.sum(axis=0)
    return np.where(n_present > 0, (f1m * pm).sum(axis=0) / np.maximum(n_present, 1), 0.0)


def _resampled_macro_f1(gold: np.ndarray, pred: np.ndarray, idx: np.ndarray, n_labels: int) -> Any:
    """Macro-F1 of every bootstrap resample at once (rows of ``idx``)."""
    return _rows_macro_f1(gold[idx], pred[idx], n_labels)


def _permutation_p(
    gold: np.ndarray, pa: np.ndarray, pb: np.ndarray, n_labels: int, obs: float, n: int, seed: int
) -> float:
    """Two-sided paired approximate-randomization p of the macro-F1 difference: each item's
    two answers are swapped with probability 1/2 (what "no difference between the methods"
    allows), and p is the share of ``n`` such draws whose |difference| reaches the observed
    ``obs``, counting the observed draw itself. McNemar tests accuracy; this tests the figure the
    tables rank by, so a macro-F1 gain spread over labels at equal accuracy is not missed."""
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n, 1000):  # chunks keep memory flat for long test sets
        swap = rng.random((min(1000, n - start), len(gold))) < 0.5
        a, b = np.where(swap, pb, pa), np.where(swap, pa, pb)
        g = np.broadcast_to(gold, a.shape)
        d = np.abs(_rows_macro_f1(g, a, n_labels) - _rows_macro_f1(g, b, n_labels))
        hits += int((d >= obs - 1e-12).sum())
    return float((1 + hits) / (n + 1))


def paired_bootstrap_diff(
    a: Sequence[Prediction],
    b: Sequence[Prediction],
    labels: Sequence[str],
    *,
    n: int = 1000,
    seed: int = 0,
    permutations: int = 10000,
) -> dict[str, Any]:
    """Macro-F1 of ``a`` minus that of ``b`` on the items both scored (paired by id), with a
    seeded percentile-bootstrap 95% interval in which items are resampled *jointly* (the same
    draw for both sides, so the per-item correlation between two methods is kept and the
    interval is far narrower than two independent CIs suggest), ``p_a_better``: the share
    of resamples in which ``a`` scores higher (a one-sided paired bootstrap confidence), and
    ``p_permutation``: the two-sided paired permutation p of the difference (``permutations``
    draws; 0 skips it)."""
    by_id = {p.id: p for p in b}
    pairs = [(p, by_id[p.id]) for p in a if p.id in by_id]
    if not pairs:
        return {
            "n": 0,
            "diff": 0.0,
            "ci95": [0.0, 0.0],
            "p_a_better": 0.0,
            "resamples": n,
            "p_permutation": None,
            "permutations": 0,
        }
    code = {lab: k for k, lab in enumerate(labels)}
    other = len(labels)
    gold = np.array([code.get(x.gold or "", other + 1) for x, _ in pairs])
    pa = np.array([code.get(x.label or "", other) for x, _ in pairs])
    pb = np.array([code.get(y.label or "", other) for _, y in pairs])
    diff = macro_f1([x for x, _ in pairs], labels) - macro_f1([y for _, y in pairs], labels)
    idx = np.random.default_rng(seed).integers(0, len(pairs), size=(n, len(pairs)))
    d = _resampled_macro_f1(gold, pa, idx, other) - _resampled_macro_f1(gold, pb, idx, other)
    return {
        "n": len(pairs),
        "diff": float(diff),
        "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
        "p_a_better": float((d > 0).mean()),
        "resamples": n,
        "p_permutation": (
            _permutation_p(gold, pa, pb, other, abs(diff), permutations, seed)
            if permutations
            else None
        ),
        "permutations": permutations,
    }


def paired_text(b: Mapping[str, Any], digits: int = 2) -> str:
    """A ``paired_bootstrap_diff`` record as one cell: the difference, its paired 95% CI and,
    when it was computed (records saved before it existed have none), the permutation p."""
    lo, hi = b["ci95"]
    p, n = b.get("p_permutation"), b.get("permutations") or 0
    if p is None:
        tail = ""
    elif p * (n + 1) <= 1.0 + 1e-9:  # no draw reached the observed difference
        tail = f", p ≤ {p:.1g}"
    else:
        tail = f", p = {p:.2g}"
    return f"{b['diff']:+.3f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{tail}"


def citation_summary(
    preds: Sequence[Prediction], rule_labels: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """How the cited predictions cite: how many name a rule, ``none``, or nothing valid
    (``invalid``, counted like invalid labels), how often each rule is cited, and
    ``consistency`` — the share of citations of a rule that decides labels whose labels
    contain the predicted label (None when there is no such citation)."""
    asked = [p for p in preds if p.rule is not None]
    by_rule = {r: 0 for r in rule_labels}
    checked = agree = 0
    for p in asked:
        if p.cited:
            assert p.rule is not None
            by_rule[p.rule] = by_rule.get(p.rule, 0) + 1
            labs = rule_labels.get(p.rule) or ()
            if labs and p.label is not None:
                checked += 1
                agree += p.label in labs
    return {
        "n": len(asked),
        "cited": sum(by_rule.values()),
        "none": sum(1 for p in asked if p.rule == NO_RULE),
        "invalid": sum(1 for p in asked if p.rule == INVALID_RULE),
        "by_rule": by_rule,
        "consistency": agree / checked if checked else None,
        "consistency_n": checked,
    }
