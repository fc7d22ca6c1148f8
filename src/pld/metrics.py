"""Scores over predictions. An invalid output counts as wrong (a miss for its gold class,
a false positive for no class) and is reported separately, never dropped."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from pld.predictions import OVERFLOW, Prediction

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
