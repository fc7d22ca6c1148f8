"""What the HTTP layer needs from a classifier, and nothing more.

The app never touches run directories, prompts or models: it talks to a ``Classifier``. The
implementation is ``pld.service.adapter.RunDirClassifier`` (a ``Rulebook`` and a student
client); another can replace it without the app, the queue or the tests changing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pld.predictions import OVERFLOW, Prediction

INFO_KEYS = ("rulebook_version", "labels", "input_fields", "rules")


class Classifier(Protocol):
    """The only thing the HTTP app knows about classification, so the app, the queue and their
    tests never depend on run directories, prompts or models."""

    async def warmup(self) -> None:
        """Called once before the service reports ready: load what is slow to load and put the
        rulebook's system prompt into the engine's prefix cache."""

    async def classify(self, inputs: Sequence[Mapping[str, str]]) -> list[Prediction]:
        """One prediction per input, in input order. An output that is not a label is a
        Prediction with ``label=None`` (reported per item), not an exception; an exception
        means the engine failed and fails every item of the call."""

    def info(self) -> dict[str, Any]:
        """At least ``rulebook_version`` (str), ``labels``, ``input_fields`` (lists of str) and
        ``rules`` (the rules with their provenance); more keys are passed through to
        ``GET /v1/rulebook``."""


def check_info(info: Mapping[str, Any]) -> None:
    """Fail at startup, not on the first request, when a classifier's ``info()`` lacks what the app
    needs to validate requests and describe the rulebook."""
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"classifier info() lacks {missing}")
    if not info["input_fields"] or not all(isinstance(f, str) for f in info["input_fields"]):
        raise ValueError("classifier info()['input_fields'] must be a non-empty list of names")


def invalid_reason(p: Prediction) -> str | None:
    """Why an item got no label, in the API's terms (None when it got one): a client can tell an
    input too long for the context from a student reply that was not a label."""
    if p.label is not None:
        return None
    return "context_overflow" if p.raw.startswith(OVERFLOW) else "not_a_label"


def result_json(item_id: str, p: Prediction, version: str) -> dict[str, Any]:
    """One item's answer. ``cited_rule`` is the rule the student cites (a rule id, ``none``
    or ``<invalid>``) when the service runs with ``--cite``, else null."""
    reason = invalid_reason(p)
    return {
        "id": item_id,
        "label": p.label,
        "valid": p.label is not None,
        "confidence": p.confidence,
        "scores": p.scores,
        "cited_rule": p.rule,
        "invalid_reason": reason,
        "raw": p.raw[:200] if reason else None,
        "rulebook_version": version,
    }
