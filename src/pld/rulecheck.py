"""Checks that a rule's text is general and executable, shared by the three teacher phases.

A rule that copies an input verbatim memorises one example; a rule with no condition words
only restates a label. Both are rejected wherever a teacher writes rule text (extraction,
consolidation, resolve edits), so the checks live here, below the phases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
COPY_NGRAM = 6

_FILLER = frozenset(
    "a an the is are be it this that then if of to for in on and or label labels correct "
    "input inputs classifier classified class answer rule should must".split()
)


def words(text: str) -> list[str]:
    """The text's words as every check here compares them: lower case, punctuation dropped."""
    return _WORD.findall(text.lower())


def word_ngrams(text: str, n: int = COPY_NGRAM) -> set[tuple[str, ...]]:
    """Every run of ``n`` consecutive words of ``text`` (computed once per source when many
    rules are checked against it, as the rulebook lint does)."""
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def shared_span(rule: str, grams: set[tuple[str, ...]], n: int = COPY_NGRAM) -> str | None:
    """The first run of ``n`` words of the rule found in ``grams`` (a source's ``word_ngrams``)."""
    rw = words(rule)
    for i in range(len(rw) - n + 1):
        if tuple(rw[i : i + n]) in grams:
            return " ".join(rw[i : i + n])
    return None


def copied_span(rule: str, source: str, n: int = COPY_NGRAM) -> str | None:
    """The first run of ``n`` words the rule shares verbatim with the source, if any."""
    return shared_span(rule, word_ngrams(source, n), n)


def condition_words(rule: str, labels: Sequence[str] = ()) -> list[str]:
    """Words of the rule that can carry a condition (not filler, not a label name)."""
    drop = _FILLER | {w for lab in labels for w in _WORD.findall(lab.lower())}
    return [w for w in _WORD.findall(rule.lower()) if w not in drop]
