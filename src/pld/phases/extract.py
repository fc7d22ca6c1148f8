"""Phase 1 — extraction: one teacher call per training example turns the teacher's reasoning
about the *gold* label into one general, executable rule.

A reply that does not parse, violates the schema, or copies the example verbatim is re-asked
(bounded, with the reason), then recorded as a failure: never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pld._async import gather_all
from pld.models.client import ChatClient
from pld.phases._teacher import ask_json
from pld.prompts import EXTRACT_SCHEMA, extract_prompt
from pld.rulecheck import condition_words, copied_span, rule_problem
from pld.tasks.base import Example, Task


@dataclass(frozen=True)
class RawRule:
    """One teacher rule for one training example (the unit synthesis clusters)."""

    example_id: str
    label: str
    reasoning: str
    rule: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        """One line of rules.jsonl."""
        return asdict(self)


@dataclass(frozen=True)
class ExtractionFailure:
    """An example that gave no valid rule after every re-ask: recorded, never dropped."""

    example_id: str
    label: str
    reason: str
    attempts: int
    last_output: str

    def to_json(self) -> dict[str, Any]:
        """One line of extraction_failures.jsonl."""
        return asdict(self)


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
    task: Task,
    ex: Example,
    teacher: ChatClient,
    *,
    max_attempts: int,
    max_tokens: int,
    name_cues: bool = False,
) -> RawRule | ExtractionFailure:
    """One example's rule, or the failure record that says why there is none."""
    source = task.render(ex)
    prompt = extract_prompt(
        task.description, task.labels, task.label_descriptions, source, ex.label, name_cues
    )
    ans = await ask_json(
        teacher,
        prompt,
        lambda obj: validate_rule(obj, source, task.labels),
        schema=EXTRACT_SCHEMA,
        max_tokens=max_tokens,
        max_attempts=max_attempts,
    )
    if ans.value is None:
        return ExtractionFailure(ex.id, ex.label, ans.error, ans.attempts, ans.last_text)
    reasoning, rule = ans.value
    return RawRule(ex.id, ex.label, reasoning, rule, ans.attempts)


async def extract(
    task: Task,
    train: Sequence[Example],
    teacher: ChatClient,
    *,
    max_attempts: int = 3,
    max_tokens: int = 320,
    name_cues: bool = False,
    on_done: Callable[[], None] | None = None,
) -> tuple[list[RawRule], list[ExtractionFailure]]:
    """Run every example concurrently (the client bounds concurrency). Backend errors after
    retries propagate: completed calls are already cached, so a rerun resumes for free."""

    async def one(ex: Example) -> RawRule | ExtractionFailure:
        r = await extract_one(
            task,
            ex,
            teacher,
            max_attempts=max_attempts,
            max_tokens=max_tokens,
            name_cues=name_cues,
        )
        if on_done is not None:
            on_done()
        return r

    results = await gather_all(one(ex) for ex in train)
    rules = [r for r in results if isinstance(r, RawRule)]
    failures = [r for r in results if isinstance(r, ExtractionFailure)]
    return rules, failures
