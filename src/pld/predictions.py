"""What a classification produces, shared by every layer that makes or scores one.

It sits at the bottom (it imports only ``tasks``) so that ``metrics``, the phases, the rulebook
and the evaluation all speak the same type without importing from each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pld.tasks.base import Example

Item = tuple[str, Mapping[str, str], str | None]
"""One input to classify: (id, fields, gold label or None)."""

OVERFLOW = "[context overflow]"
NO_RULE = "none"
"""A citation that names no rule (the student says no listed rule decided the answer)."""
INVALID_RULE = "<invalid>"
"""A citation that is not a rule id or ``none`` (unconstrained backends), or none was possible
because the answer itself was invalid: counted and reported like an invalid label."""


@dataclass(frozen=True)
class Prediction:
    """One student answer with what it cost: kept per item so every figure can be recomputed
    (and an invalid answer is a scored miss, not a dropped row)."""

    id: str
    label: str | None  # None = invalid output
    raw: str
    confidence: float | None
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    cached: bool
    gold: str | None = None
    scores: dict[str, float] | None = None  # label -> probability (calibrated when enabled)
    rule: str | None = None  # cited rule id, NO_RULE or INVALID_RULE; None = not asked to cite

    @property
    def valid(self) -> bool:
        """The answer was exactly one label."""
        return self.label is not None

    @property
    def correct(self) -> bool:
        """The answer is the gold label (an invalid answer never is)."""
        return self.label is not None and self.label == self.gold

    @property
    def cited(self) -> bool:
        """The student cited one of the rules (not ``none``, not an invalid citation)."""
        return self.rule is not None and self.rule not in (NO_RULE, INVALID_RULE)

    def to_json(self) -> dict[str, Any]:
        """One line of a predictions JSONL file (``rule`` only when a citation was asked
        for, so files written without ``--cite`` keep their shape)."""
        d = asdict(self)
        if self.rule is None:
            del d["rule"]
        d["valid"] = self.valid
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Prediction:
        """Back from a predictions line (extra keys such as ``valid`` ignored)."""
        keys = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in keys})


def as_items(inputs: Sequence[Example | Mapping[str, str] | str]) -> list[Item]:
    """Normalise what a user may pass to ``predict``: examples keep their id and gold label, a
    mapping is the input's fields (its ``id`` used when present), a bare string is ``text``."""
    items: list[Item] = []
    for k, x in enumerate(inputs):
        if isinstance(x, Example):
            items.append((x.id, x.fields, x.label or None))
        elif isinstance(x, str):
            items.append((str(k), {"text": x}, None))
        else:
            items.append((str(x.get("id", k)), x, None))
    return items


def example_items(examples: Sequence[Example]) -> list[Item]:
    """Labeled examples as items (gold kept, so the predictions can be scored)."""
    return [(e.id, e.fields, e.label) for e in examples]
