"""Phase 1 — extraction: one teacher call per training example turns the teacher's reasoning
about the *gold* label into one general, executable rule.

A reply that does not parse, violates the schema, or copies the example verbatim is re-asked
(bounded, with the reason), then recorded as a failure: never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pld._async import gather_all
from pld.errors import ContextOverflow
from pld.guards import rule_problem
from pld.models.base import GenOptions, Message
from pld.models.client import ChatClient
from pld.prompts import EXTRACT_SCHEMA, TEACHER_SYSTEM, extract_prompt, parse_json_object
from pld.tasks.base import Example, Task

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
COPY_NGRAM = 6


@dataclass(frozen=True)
class RawRule:
    example_id: str
    label: str
    reasoning: str
    rule: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExtractionFailure:
    example_id: str
    label: str
    reason: str
    attempts: int
    last_output: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def copied_span(rule: str, source: str, n: int = COPY_NGRAM) -> str | None:
    """The first run of ``n`` words the rule shares verbatim with the source, if any."""
    rw = _WORD.findall(rule.lower())
    sw = _WORD.findall(source.lower())
    grams = {tuple(sw[i : i + n]) for i in range(len(sw) - n + 1)}
    for i in range(len(rw) - n + 1):
        if tuple(rw[i : i + n]) in grams:
            return " ".join(rw[i : i + n])
    return None


_FILLER = frozenset(
    "a an the is are be it this that then if of to for in on and or label labels correct "
    "input inputs classifier classified class answer rule should must".split()
)


def condition_words(rule: str, labels: Sequence[str] = ()) -> list[str]:
    """Words of the rule that can carry a condition (not filler, not a label name)."""
    drop = _FILLER | {w for lab in labels for w in _WORD.findall(lab.lower())}
    return [w for w in _WORD.findall(rule.lower()) if w not in drop]


def validate_rule(obj: dict[str, Any], source: str, labels: Sequence[str] = ()) -> tuple[str, str]:
    """Return (reasoning, rule) or raise ValueError naming what is wrong."""
    rule = obj.get("rule")
    reasoning = obj.get("reasoning", "")
    if not isinstance(rule, str) or len(rule.split()) < 4:
        raise ValueError('"rule" must be a sentence of at least 4 words')
    if not isinstance(reasoning, str):
        raise ValueError('"reasoning" must be a string')
    if len(condition_words(rule, labels)) < 3:
        raise ValueError("the rule states a label but no condition; say when it applies")
    span = copied_span(rule, source)
    if span is not None:
        raise ValueError(f'the rule copies the input verbatim ("{span}"); describe it generally')
    if (problem := rule_problem(rule, [source], labels)) is not None:
        raise ValueError(f"the rule was refused: {problem}")
    return reasoning.strip(), " ".join(rule.split())


async def extract_one(
    task: Task, ex: Example, teacher: ChatClient, *, max_attempts: int, max_tokens: int
) -> RawRule | ExtractionFailure:
    source = task.render(ex)
    prompt = extract_prompt(
        task.description, task.labels, task.label_descriptions, source, ex.label
    )
    messages = [Message("system", TEACHER_SYSTEM), Message("user", prompt)]
    last_text, reason = "", ""
    for attempt in range(max_attempts):
        opts = GenOptions(
            max_tokens=max_tokens,
            temperature=0.0 if attempt == 0 else 0.7,
            seed=attempt,
            json_schema=EXTRACT_SCHEMA,
        )
        try:
            comp = await teacher.complete(messages, opts, sample=attempt)
        except ContextOverflow as e:
            return ExtractionFailure(ex.id, ex.label, f"context overflow: {e}", attempt + 1, "")
        last_text = comp.text
        try:
            reasoning, rule = validate_rule(parse_json_object(comp.text), source, task.labels)
            return RawRule(ex.id, ex.label, reasoning, rule, attempt + 1)
        except ValueError as e:  # JSONDecodeError is a ValueError
            reason = f"{type(e).__name__}: {e}"
            messages = [
                Message("system", TEACHER_SYSTEM),
                Message("user", prompt),
                Message("assistant", comp.text[:2000]),
                Message("user", f"That reply is invalid ({reason}). Reply again, JSON only."),
            ]
    return ExtractionFailure(ex.id, ex.label, reason, max_attempts, last_text[:2000])


async def extract(
    task: Task,
    train: Sequence[Example],
    teacher: ChatClient,
    *,
    max_attempts: int = 3,
    max_tokens: int = 320,
    on_done: Callable[[], None] | None = None,
) -> tuple[list[RawRule], list[ExtractionFailure]]:
    """Run every example concurrently (the client bounds concurrency). Backend errors after
    retries propagate: completed calls are already cached, so a rerun resumes for free."""

    async def one(ex: Example) -> RawRule | ExtractionFailure:
        r = await extract_one(task, ex, teacher, max_attempts=max_attempts, max_tokens=max_tokens)
        if on_done is not None:
            on_done()
        return r

    results = await gather_all(one(ex) for ex in train)
    rules = [r for r in results if isinstance(r, RawRule)]
    failures = [r for r in results if isinstance(r, ExtractionFailure)]
    return rules, failures
