"""The one teacher loop: ask for JSON under a schema, validate it, re-ask with the bad reply
and the error, and account for what still failed.

All three teacher phases (extraction, consolidation, resolve edits) go through ``ask_json``,
so a fix to re-asking is made once. The request of attempt 0 is the phase's prompt alone at
temperature 0; a re-ask shows the teacher its previous reply and why it was refused (the
instructor pattern), at a higher temperature and another seed, so it is a new cache entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pld.errors import ContextOverflow
from pld.models.base import GenOptions, Message
from pld.models.client import ChatClient
from pld.prompts import TEACHER_SYSTEM, parse_json_object, reask_message

T = TypeVar("T")

FIRST_TEMPERATURE = 0.0
REASK_TEMPERATURE = 0.7
SHOWN_REPLY_CHARS = 2000


@dataclass(frozen=True)
class TeacherAnswer(Generic[T]):
    """The validated value, or why there is none. ``attempts`` counts the calls made;
    ``last_text`` is the last reply (shortened) for the failure record."""

    value: T | None
    attempts: int
    error: str = ""
    last_text: str = ""

    @property
    def ok(self) -> bool:
        """Whether the teacher gave a valid reply."""
        return self.value is not None


def temperature(attempt: int) -> float:
    """Greedy first (reproducible, cache-friendly), then sample to get a different reply."""
    return FIRST_TEMPERATURE if attempt == 0 else REASK_TEMPERATURE


async def ask_json(
    teacher: ChatClient,
    prompt: str,
    validate: Callable[[dict[str, Any]], T],
    *,
    schema: Mapping[str, Any],
    max_tokens: int,
    max_attempts: int,
    seed: int = 0,
) -> TeacherAnswer[T]:
    """Ask until ``validate`` accepts the parsed reply (it raises ValueError/TypeError/
    AttributeError naming the problem) or ``max_attempts`` calls are spent. A prompt too long
    for the teacher's context is a recorded failure, not a crash of the whole phase."""
    first = [Message("system", TEACHER_SYSTEM), Message("user", prompt)]
    messages = first
    last_text, error = "", ""
    for attempt in range(max_attempts):
        opts = GenOptions(
            max_tokens=max_tokens,
            temperature=temperature(attempt),
            seed=seed + attempt,
            json_schema=schema,
        )
        try:
            comp = await teacher.complete(messages, opts, sample=attempt)
        except ContextOverflow as e:
            return TeacherAnswer(None, attempt + 1, f"context overflow: {e}", "")
        last_text = comp.text
        try:
            return TeacherAnswer(validate(parse_json_object(comp.text)), attempt + 1)
        except (ValueError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
            error = f"{type(e).__name__}: {e}"
            messages = [
                *first,
                Message("assistant", comp.text[:SHOWN_REPLY_CHARS]),
                Message("user", reask_message(error)),
            ]
    return TeacherAnswer(None, max_attempts, error, last_text[:SHOWN_REPLY_CHARS])
