"""Evaluation: PLD against the alternatives a user would try, on the same items.

Methods: ``zero-shot`` (task description + labels), ``few-shot`` (k seeded random training
examples as demonstrations), ``cot`` (reason, then a parsed ``Answer: <label>`` line) and
``pld`` (a run directory's saved system prompt and user template, byte for byte). The label-
scoring methods share one decision rule (closed choice, calibrated when enabled), so the
comparison isolates what the prompt contributes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pld._async import gather_all
from pld.errors import ConfigError
from pld.metrics import summary
from pld.models.base import GenOptions, Message
from pld.models.client import ChatClient
from pld.phases.classify import Prediction, Shot, classify, classify_options, parse_label
from pld.rules import render_system_prompt
from pld.tasks.base import Example, Task, render_template

METHODS = ("zero-shot", "few-shot", "cot", "pld")
COT_SUFFIX = (
    "\nThink step by step in at most five sentences, then give the final answer on its own "
    "line as: Answer: <label>"
)
_ANSWER = re.compile(r"answer\s*[:：]\s*(.+)", re.I)


@dataclass(frozen=True)
class Prompt:
    system: str
    user_template: str
    shots: tuple[Shot, ...] = ()


def zero_shot_prompt(task: Task) -> Prompt:
    return Prompt(
        render_system_prompt(task.description, task.labels, task.label_descriptions, None),
        task.input_template,
    )


def few_shot_prompt(task: Task, train: Sequence[Example], k: int, seed: int) -> Prompt:
    rng = random.Random(seed)
    pool = sorted(train, key=lambda e: e.id)
    chosen = rng.sample(pool, min(k, len(pool)))
    base = zero_shot_prompt(task)
    return Prompt(base.system, base.user_template, tuple((task.render(e), e.label) for e in chosen))


def pld_prompt(run_dir: str | Path) -> Prompt:
    d = Path(run_dir)
    return Prompt(
        (d / "system_prompt.txt").read_text(encoding="utf-8"),
        (d / "user_template.txt").read_text(encoding="utf-8"),
    )


def parse_cot(text: str, labels: Sequence[str]) -> str | None:
    """The label on the last 'Answer:' line; strict (see ``parse_label``)."""
    found = _ANSWER.findall(text)
    return parse_label(found[-1], labels) if found else None


async def classify_cot(
    items: Sequence[tuple[str, Mapping[str, str], str | None]],
    prompt: Prompt,
    labels: Sequence[str],
    student: ChatClient,
    *,
    max_tokens: int = 256,
    on_done: Callable[[], None] | None = None,
) -> list[Prediction]:
    """Reason first, then answer. The label is read from a final 'Answer:' line; when there is
    none (small models rarely follow the format), a second, closed-choice call asks for the
    label given the reasoning — so CoT is scored on its reasoning, not on its formatting. Tokens
    and latency of both calls are counted."""
    system = prompt.system.rstrip("\n") + COT_SUFFIX + "\n"
    opts = classify_options(labels)

    async def one(item: tuple[str, Mapping[str, str], str | None]) -> Prediction:
        msgs = [
            Message("system", system),
            Message("user", render_template(prompt.user_template, item[1])),
        ]
        comp = await student.complete(msgs, GenOptions(max_tokens=max_tokens, temperature=0.0))
        label = parse_cot(comp.text, labels)
        usage, latency, raw = comp.usage, comp.latency_s, comp.text
        if label is None:
            follow = [
                *msgs,
                Message("assistant", comp.text),
                Message(
                    "user",
                    f"So the answer is one of: {', '.join(labels)}. Reply with the label only.",
                ),
            ]
            ans = await student.complete(follow, opts)
            label = parse_label(ans.text, labels)
            usage, latency = usage + ans.usage, latency + ans.latency_s
            raw = f"{comp.text}\n[answer] {ans.text}"
        if on_done:
            on_done()
        return Prediction(
            id=item[0],
            label=label,
            raw=raw,
            confidence=None,
            latency_s=latency,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            cached=comp.cached,
            gold=item[2],
        )

    return await gather_all(one(it) for it in items)


async def run_method(
    method: str,
    task: Task,
    items: Sequence[Example],
    student: ChatClient,
    *,
    train: Sequence[Example] = (),
    run_dir: str | Path | None = None,
    k: int = 5,
    seed: int = 0,
    calibrate: bool = True,
    cot_max_tokens: int = 256,
    on_done: Callable[[], None] | None = None,
) -> tuple[Prompt, list[Prediction]]:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "pld":
        if run_dir is None:
            raise ConfigError("method pld needs --prompt RUN_DIR (a finished pld distill run)")
        prompt = pld_prompt(run_dir)
    elif method == "few-shot":
        if not train:
            raise ConfigError("few-shot needs training examples to draw demonstrations from")
        prompt = few_shot_prompt(task, train, k, seed)
    else:
        prompt = zero_shot_prompt(task)
    triples = [(e.id, e.fields, e.label) for e in items]
    if method == "cot":
        return prompt, await classify_cot(
            triples, prompt, task.labels, student, max_tokens=cot_max_tokens, on_done=on_done
        )
    preds = await classify(
        triples,
        system_prompt=prompt.system,
        user_template=prompt.user_template,
        labels=task.labels,
        student=student,
        calibrate=calibrate,
        shots=prompt.shots,
        on_done=on_done,
    )
    return prompt, preds


def mcnemar_counts(a: Mapping[str, bool], b: Mapping[str, bool]) -> dict[str, Any]:
    """Exact (binomial) McNemar test on paired correctness (item id -> correct); only the
    items both sides scored are paired."""
    from scipy.stats import binomtest

    common = [i for i in a if i in b]
    n10 = sum(1 for i in common if a[i] and not b[i])
    n01 = sum(1 for i in common if b[i] and not a[i])
    n = n01 + n10
    pval = 1.0 if n == 0 else float(binomtest(min(n01, n10), n, 0.5).pvalue)
    return {"a_only_correct": n10, "b_only_correct": n01, "p_value": pval}


def mcnemar(a: Sequence[Prediction], b: Sequence[Prediction]) -> dict[str, Any]:
    """McNemar between two methods' predictions on the same items."""
    return mcnemar_counts({p.id: p.correct for p in a}, {p.id: p.correct for p in b})


def method_result(
    method: str,
    prompt: Prompt,
    preds: Sequence[Prediction],
    labels: Sequence[str],
    cost_usd: float,
) -> dict[str, Any]:
    s = summary(preds, labels)
    s.update(
        method=method,
        system_prompt_chars=len(prompt.system),
        shots=len(prompt.shots),
        cost_usd=cost_usd,
        cost_per_item_usd=cost_usd / len(preds) if preds else 0.0,
    )
    return s
