"""Loaders for the paper's datasets, from the formats described in each ``SOURCE.md``.

Users pass the file path; nothing is downloaded. Every example carries a ``group`` so splits
keep related items together: a StereoSet cluster (its three sentences), a Contract-NLI document
(its 17 hypotheses).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pld.errors import DataError
from pld.tasks.base import Example, Task

STEREO_LABELS = ("stereotype", "anti-stereotype", "unrelated")
STEREO_DOMAINS = ("gender", "profession", "race", "religion")
N_INTER = 2123  # entries 0..2122 of each list are intersentence, the rest intrasentence


def _read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror or e}; pass the dataset file path") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: malformed JSON ({e.msg})") from e


def load_stereoset(
    path: str | Path, *, variant: str = "intrasentence", scheme: str = "stereotype"
) -> Task:
    """StereoSet dev (the regrouped ``stereoset.json``): one item per sentence.

    ``scheme="stereotype"``: stereotype / anti-stereotype / unrelated; ``scheme="domain"``:
    the bias type (gender / profession / race / religion).
    """
    if variant not in ("intrasentence", "intersentence"):
        raise DataError(
            f"StereoSet variant must be intrasentence or intersentence, not {variant!r}"
        )
    if scheme not in ("stereotype", "domain"):
        raise DataError(f"StereoSet scheme must be stereotype or domain, not {scheme!r}")
    d = _read_json(path)
    if not isinstance(d, dict) or set(d) != set(STEREO_LABELS):
        raise DataError(f"{path}: expected keys {list(STEREO_LABELS)} (see SOURCE.md)")
    n = len(d["stereotype"])
    if any(len(d[k]) != n for k in STEREO_LABELS):
        raise DataError(f"{path}: the three label lists differ in length")
    rng = range(N_INTER, n) if variant == "intrasentence" else range(N_INTER)
    examples = []
    for i in rng:
        for lab in STEREO_LABELS:
            r = d[lab][i]
            if variant == "intrasentence" and "BLANK" not in r["context"]:
                raise DataError(f"{path}: entry {i} of {lab!r} is not intrasentence")
            label = lab if scheme == "stereotype" else r["bias_type"]
            fields = {"sentence": r["sentence"], "context": r["context"], "target": r["target"]}
            examples.append(Example(f"{r['id']}:{lab}", fields, label, group=r["id"]))
    if scheme == "stereotype":
        template = (
            "Target group: {target}\nTemplate: {context}\nSentence: {sentence}"
            if variant == "intrasentence"
            else "Target group: {target}\nContext: {context}\nContinuation: {sentence}"
        )
        desc = (
            "Decide whether the sentence expresses a stereotype about the target group, "
            "the opposite of a stereotype (anti-stereotype), or is unrelated/nonsensical."
        )
        labels: tuple[str, ...] = STEREO_LABELS
    else:
        template = (
            "Sentence: {sentence}"
            if variant == "intrasentence"
            else "Context: {context}\nContinuation: {sentence}"
        )
        desc = "Decide which social domain the sentence is about."
        labels = STEREO_DOMAINS
    return Task(f"stereoset-{variant}-{scheme}", desc, labels, tuple(examples), template)


NLI_LABELS = ("Entailment", "Contradiction", "NotMentioned")
_WORDS = re.compile(r"[a-z]{3,}")


def fit_premise(
    text: str,
    spans: Sequence[Sequence[int]],
    hypothesis: str,
    max_chars: int | None,
    strategy: str,
) -> tuple[str, bool]:
    """Shorten a contract to ``max_chars``. ``truncate`` keeps the head; ``retrieve`` keeps the
    document's own segments (``spans``, the dataset's sentence segmentation — not the gold
    evidence) that share most words with the hypothesis, in document order. Returns (text,
    shortened?)."""
    if max_chars is None or len(text) <= max_chars:
        return text, False
    if strategy == "truncate":
        return text[:max_chars], True
    if strategy != "retrieve":
        raise DataError(f"long-document strategy must be truncate or retrieve, not {strategy!r}")
    hyp = set(_WORDS.findall(hypothesis.lower()))
    segs = [(int(s), int(e)) for s, e in spans]
    scored = sorted(
        range(len(segs)),
        key=lambda k: (-len(hyp & set(_WORDS.findall(text[segs[k][0] : segs[k][1]].lower()))), k),
    )
    keep: list[int] = []
    used = 0
    for k in scored:
        s, e = segs[k]
        if used + (e - s) + 1 > max_chars:
            continue
        keep.append(k)
        used += e - s + 1
    return "\n".join(text[segs[k][0] : segs[k][1]] for k in sorted(keep)), True


def load_contract_nli(
    path: str | Path,
    *,
    max_premise_chars: int | None = None,
    strategy: str = "retrieve",
    hypotheses: Sequence[str] | None = None,
) -> Task:
    """ContractNLI: one item per (contract, hypothesis). The premise is the full contract —
    never the gold evidence spans, which leak the label. Contracts longer than
    ``max_premise_chars`` are shortened by ``strategy`` and counted in the task name's notes."""
    d = _read_json(path)
    try:
        docs, labels = d["documents"], d["labels"]
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: expected 'documents' and 'labels' (see SOURCE.md)") from e
    keys = [k for k in labels if hypotheses is None or k in hypotheses]
    examples = []
    shortened = 0
    for doc in docs:
        ann = doc["annotation_sets"][0]["annotations"]
        for k in keys:
            hyp = labels[k]["hypothesis"]
            premise, cut = fit_premise(doc["text"], doc["spans"], hyp, max_premise_chars, strategy)
            shortened += cut
            examples.append(
                Example(
                    f"{doc['id']}:{k}",
                    {"premise": premise, "hypothesis": hyp},
                    ann[k]["choice"],
                    group=str(doc["id"]),
                )
            )
    notes: tuple[str, ...] = ()
    if max_premise_chars is not None:
        notes = (
            f"{shortened} of {len(examples)} premises longer than {max_premise_chars} "
            f"chars were shortened ({strategy})",
        )
    return Task(
        "contract-nli",
        "Read the non-disclosure agreement and decide whether the hypothesis is entailed by "
        "it, contradicted by it, or not mentioned in it.",
        NLI_LABELS,
        tuple(examples),
        "Contract:\n{premise}\n\nHypothesis: {hypothesis}",
        notes=notes,
    )


LOGIQA_REORDERED_TEST = frozenset(
    {108, 114, 140, 144, 145, 147, 148, 150, 172, 185, 192, 193, 194, 195, 197, 198, 199, 200, 201}
)


def _strip_option(line: str, letter: str) -> str:
    return re.sub(rf"^{letter}(?:[.?]\s*|\s+)", "", line, count=1, flags=re.I)


def load_logiqa(path: str | Path, *, reordered: frozenset[int] | None = None) -> Task:
    """LogiQA v1 (8-line blocks). In ``Test.txt`` 19 questions print their options in the order
    A, C, B, D and their key names the printed letter: those are re-sorted by printed letter
    (pass ``reordered`` to override which indices; by default it is chosen by file name)."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror or e}") from e
    lines = raw.split("\n")
    if len(lines) % 8 != 0:
        raise DataError(f"{p}: {len(lines)} lines is not a multiple of 8 (see SOURCE.md)")
    if reordered is None:
        reordered = LOGIQA_REORDERED_TEST if p.name.lower() == "test.txt" else frozenset()
    examples = []
    for q in range(len(lines) // 8):
        b = lines[q * 8 : q * 8 + 8]
        key = b[1].strip().upper()
        if key not in "ABCD" or len(key) != 1:
            raise DataError(f"{p}:{q * 8 + 2}: answer key {b[1]!r} is not a/b/c/d")
        printed = ["A", "C", "B", "D"] if q in reordered else ["A", "B", "C", "D"]
        opts = {letter: _strip_option(b[4 + k].strip(), letter) for k, letter in enumerate(printed)}
        options = "\n".join(f"{x}. {opts[x]}" for x in "ABCD")
        examples.append(
            Example(
                f"{p.stem.lower()}-{q:04d}",
                {"passage": b[2].strip(), "question": b[3].strip(), "options": options},
                key,
            )
        )
    return Task(
        "logiqa",
        "Answer the logical-reasoning multiple-choice question about the passage with the "
        "letter of the correct option.",
        ("A", "B", "C", "D"),
        tuple(examples),
        "Passage: {passage}\nQuestion: {question}\nOptions:\n{options}",
    )
