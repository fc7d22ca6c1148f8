"""Rules that may collide: pairs whose conditions overlap while naming different labels, and
rules whose text names a label other than their own. Pure functions over the rulebook and a
cited validation pass; ``pld.audit`` runs the student and calls these.

Two kinds of evidence for an overlapping pair (A, B) with different label sets:

- **citation confusion**: the student cited A on items whose gold label is one of B's and
  none of A's — A's condition fired on B's territory. A pair is flagged from
  ``min_confusions`` (default 2) such items.
- **text similarity** of the two conditions (the rule text without its "the label is X"
  clause, as synthesis embeds it). Every rule of a rulebook shares a template ("If the
  ticket mentions …"), so the raw similarity of any two rules is high: SmolLM2's mean-pooled
  embeddings give 0.89–0.93 for unrelated rule texts. What all rules share is removed first:
  with an embedder, the rulebook's mean rule vector is subtracted before the cosine (with at
  least three rules; two are left raw, since two centred vectors are always opposite);
  without one, a lexical Jaccard fallback compares content words after dropping stop words
  and *template* words (those in more than half of the rules, and in at least three). A pair
  is flagged at ``threshold`` (default 0.5) or above on either measure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pld.phases.synthesize import condition_text
from pld.predictions import Prediction
from pld.rules import Instruction

SIM_THRESHOLD = 0.5
MIN_CONFUSIONS = 2
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_STOP = frozenset(
    "a an and are as at be but by for from has have if in into is it its of on or that the "
    "then this to was were when where which while who with not no any all some than there "
    "their they them it's label labels".split()
)


def content_words(text: str) -> set[str]:
    """The lower-cased words of a rule's condition, stop words removed."""
    return {w for w in _WORD.findall(condition_text(text).lower()) if w not in _STOP}


def condition(text: str) -> str:
    """What a rule's similarity is measured on: its text without the label clause."""
    return condition_text(text)


def jaccard_matrix(texts: Sequence[str]) -> NDArray[np.float64]:
    """Pairwise Jaccard similarity of the texts' content words, without template words
    (those in more than half of the texts and in at least three)."""
    words = [content_words(t) for t in texts]
    df: dict[str, int] = {}
    for ws in words:
        for w in ws:
            df[w] = df.get(w, 0) + 1
    template = {w for w, k in df.items() if k >= 3 and k > len(texts) / 2}
    sets = [ws - template for ws in words]
    n = len(texts)
    out = np.eye(n)
    for i, j in combinations(range(n), 2):
        union = sets[i] | sets[j]
        out[i, j] = out[j, i] = len(sets[i] & sets[j]) / len(union) if union else 0.0
    return out


def cosine_matrix(vectors: NDArray[np.float32]) -> NDArray[np.float64]:
    """Pairwise cosine of the vectors after subtracting their mean (with three or more)."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.shape[0] >= 3:
        x = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms == 0, 1.0, norms)
    return np.clip(x @ x.T, -1.0, 1.0)


def _differ(a: Instruction, b: Instruction) -> bool:
    return bool(a.labels and b.labels and set(a.labels) != set(b.labels))


def citation_confusion(
    cited: Sequence[Prediction], rules: Sequence[Instruction]
) -> dict[tuple[str, str], list[str]]:
    """(A, B) -> ids of items that cite A while their gold label is B's and not A's."""
    by_id = {r.id: r for r in rules}
    out: dict[tuple[str, str], list[str]] = {}
    for p in cited:
        a = by_id.get(p.rule or "")
        if a is None or not p.gold or p.gold in a.labels:
            continue
        for b in rules:
            if b.id != a.id and p.gold in b.labels:
                out.setdefault((a.id, b.id), []).append(p.id)
    return out


def conflicts(
    rules: Sequence[Instruction],
    cited: Sequence[Prediction],
    similarity: NDArray[np.float64],
    *,
    method: str,
    threshold: float = SIM_THRESHOLD,
    min_confusions: int = MIN_CONFUSIONS,
) -> list[dict[str, Any]]:
    """Pairs of rules naming different labels with evidence that their conditions overlap,
    each with every piece of evidence found (the flagged ones and the figures behind them)."""
    confusion = citation_confusion(cited, rules)
    out = []
    for i, j in combinations(range(len(rules)), 2):
        a, b = rules[i], rules[j]
        if not _differ(a, b):
            continue
        evidence: list[dict[str, Any]] = []
        for x, y in ((a, b), (b, a)):
            items = confusion.get((x.id, y.id), [])
            if len(items) >= min_confusions:
                evidence.append(
                    {"kind": "citation", "cited": x.id, "gold_of": y.id, "items": items}
                )
        sim = float(similarity[i, j])
        if sim >= threshold:
            evidence.append({"kind": "similarity", "method": method, "value": sim})
        if evidence:
            out.append(
                {
                    "rules": [a.id, b.id],
                    "labels": [list(a.labels), list(b.labels)],
                    "similarity": sim,
                    "evidence": evidence,
                }
            )
    return out


def names_other_labels(rule: Instruction, labels: Sequence[str]) -> list[str]:
    """The task's labels, other than the rule's own, that its text names as a whole word
    (case-insensitive; ``_`` and ``-`` in a label also match a space)."""
    found = []
    for lab in labels:
        if lab in rule.labels:
            continue
        variants = {lab, lab.replace("_", " "), lab.replace("-", " ")}
        for v in variants:
            if re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", rule.text, re.I):
                found.append(lab)
                break
    return found


def label_mentions(rules: Sequence[Instruction], labels: Sequence[str]) -> list[dict[str, Any]]:
    """One record per rule whose text names another label than its own."""
    out = []
    for r in rules:
        other = names_other_labels(r, labels)
        if other:
            out.append({"rule": r.id, "own_labels": list(r.labels), "names": other})
    return out


def similarity_pairs(
    rules: Sequence[Instruction], similarity: NDArray[np.float64]
) -> list[dict[str, Any]]:
    """Every pair naming different labels with its similarity, most similar first."""
    rows = [
        {"rules": [rules[i].id, rules[j].id], "similarity": float(similarity[i, j])}
        for i, j in combinations(range(len(rules)), 2)
        if _differ(rules[i], rules[j])
    ]
    return sorted(rows, key=lambda r: -float(r["similarity"]))


def rule_label_map(rules: Sequence[Instruction]) -> Mapping[str, tuple[str, ...]]:
    """Rule id -> the labels it decides."""
    return {r.id: r.labels for r in rules}
