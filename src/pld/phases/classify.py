"""Phase 4 — classification: the student answers zero-shot with the rulebook as system prompt.

Small students have strong label priors (SmolLM2-135M answers the first label for ~95% of
content-free inputs), so by default the label distribution is *contextually calibrated*
(Zhao et al., 2021): divided by the distribution the same system prompt yields on content-free
inputs ("N/A", "", "[MASK]"), then renormalised. The prior costs three cached calls per prompt,
is saved with the run (``calibration.json``); ``Rulebook.predict`` recomputes it for the student
it is given and reports a difference from the saved one.
Backends that return no label distribution are used uncalibrated.

The system prompt comes first and is byte-identical for every item, so the engine's prefix
cache holds it. The label is decided in the fewest decoded tokens: a closed-choice constraint
(one token on the local engine, see ``pld.models.local``), never a JSON wrapper. A reply that
is not exactly one label (backends without constraints) is an ``invalid`` outcome: scored as
wrong and reported.

Citation (``cite``): after the label, the same conversation goes on with the answer as the
assistant turn and one more user turn asking which numbered rule decided it, answered as a
closed choice over the rules' numbers in the prompt's list (``1`` .. ``n``) plus ``none``, and
mapped back to the rule's id. Why this shape and not one decode over ``RULE: LABEL`` pairs: on
the local engine a closed choice is one decoded token with a distribution only when the
choices' first tokens differ, and every pair (every id ``R1``, ``R2``, …) starts with the same
token ``R`` — a pair choice would be a greedy multi-token grammar decode with no distribution,
so the label could no longer be calibrated and would change. The list numbers ``1``..``9``
are one token each (with ten or more rules ``1`` and ``10`` share one, and the engine falls
back to its grammar: correct, a token or two more). Asking after the label keeps the label
call byte-identical to an uncited one (the same cache entry, the same label, confidence and
calibration: citing never changes an answer) and costs one more request whose prompt is the
cached prefix plus about 45 tokens. The rule choice is calibrated like the label, whenever the
backend gives a distribution: a small student puts most of its mass on the first list number
whatever the input (SmolLM2 cited R1 on 28 of 28 demo tickets, bench/RESULTS.md section 5), so
the same question is asked once per label on the content-free inputs (labels x 3 cached calls
per prompt) and each citation's distribution is divided by the prior of the answer it cites.
It is over every rule, not only those naming the answer, so whether the
cited rule's labels contain the answer stays a measurement (citation consistency) rather than
a tautology. A reply that is not a listed number, a rule id or ``none`` (backends without
constraints) is an invalid citation (``INVALID_RULE``), counted like an invalid label; so is
the citation of an answer that is itself invalid (no call is made). When the prompt lists no
rules (no rules, or a zero-shot fallback prompt) the citation is ``none`` without a call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from pld._async import gather_all
from pld.errors import ContextOverflow
from pld.models.base import Completion, GenOptions, Message
from pld.models.client import ChatClient
from pld.predictions import INVALID_RULE, NO_RULE, OVERFLOW, Item, Prediction
from pld.prompts import Prompt, Shot
from pld.tasks.base import render_template, template_fields

_STRIP = re.compile(r"^[\s\"'`*_\[(]+|[\s\"'`*_.!\])]+$")


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """Strict: after trimming quotes, punctuation and a 'label:' prefix the reply must equal
    one label (case-insensitive)."""
    s = text.strip().splitlines()[0] if text.strip() else ""
    s = re.sub(r"^(label|answer)\s*:\s*", "", s, flags=re.I)
    s = _STRIP.sub("", s)
    by_lower = {lab.lower(): lab for lab in labels}
    return by_lower.get(s.lower())


def classify_options(labels: Sequence[str]) -> GenOptions:
    """A closed choice over the labels, with room for the longest one (one token locally)."""
    longest = max(len(lab) for lab in labels)
    return GenOptions(max_tokens=max(4, longest // 2 + 4), temperature=0.0, choices=tuple(labels))


CONTENT_FREE = ("N/A", "", "[MASK]")
CITE_QUESTION = (
    "Which numbered decision rule decided that answer? Reply with its number only (1 to {n}), "
    f"or {NO_RULE} if no rule applies."
)
_RULE_PREFIX = re.compile(r"^\s*(rule(\s+(id|number))?|id|number)\b\s*[:#]?\s*(?=\S)", re.I)


def cite_options(rule_ids: Sequence[str]) -> GenOptions:
    """A closed choice over the rules' list numbers (``rule_ids`` in list order) and
    ``none``."""
    choices = (*(str(k) for k in range(1, len(rule_ids) + 1)), NO_RULE)
    return GenOptions(max_tokens=6, temperature=0.0, choices=choices)


def parse_rule(text: str, rule_ids: Sequence[str]) -> str:
    """Strict, as ``parse_label``: the reply (after quotes, brackets, punctuation and a
    'rule:' prefix) must be one list number, one rule id or ``none``; the rule's id (or
    ``none``) is returned, anything else is ``INVALID_RULE``."""
    s = text.strip().splitlines()[0] if text.strip() else ""
    numbers = [str(k) for k in range(1, len(rule_ids) + 1)]
    found = parse_label(_RULE_PREFIX.sub("", s), (*numbers, *rule_ids, NO_RULE))
    if found is None:
        return INVALID_RULE
    return rule_ids[int(found) - 1] if found.isdigit() else found


CitePrior = Mapping[str, Mapping[str, float]]  # answer label -> rule choice -> probability
MEASURE: Literal["measure"] = "measure"  # classify's default: measure the citation prior first


def _cite_messages(
    messages: Sequence[Message], label: str, rule_ids: Sequence[str]
) -> list[Message]:
    ask = CITE_QUESTION.format(n=len(rule_ids))
    return [*messages, Message("assistant", label), Message("user", ask)]


async def cite_prior(
    prompt: Prompt, labels: Sequence[str], rule_ids: Sequence[str], student: ChatClient
) -> CitePrior | None:
    """Per answer label, the student's rule-choice distribution on the content-free inputs
    (None when the backend gives no distribution, or the prompt lists no rule)."""
    if not rule_ids:
        return None
    opts = cite_options(rule_ids)
    names = template_fields(prompt.user_template)
    out: dict[str, dict[str, float]] = {}
    for label in labels:
        acc = dict.fromkeys(opts.choices or (), 0.0)
        for filler in CONTENT_FREE:
            user = render_template(prompt.user_template, dict.fromkeys(names, filler))
            base = _messages(prompt.system, prompt.shots, user)
            try:
                comp = await student.complete(_cite_messages(base, label, rule_ids), opts)
            except ContextOverflow:
                return None
            p = _probs(comp.choice_logprobs, list(acc))
            if p is None:
                return None
            acc = {c: a + x / len(CONTENT_FREE) for (c, a), x in zip(acc.items(), p, strict=True)}
        out[label] = acc
    return out


def _calibrated_choice(comp: Completion, prior: Mapping[str, float]) -> str | None:
    """The choice with the highest probability over its content-free prior (None when the
    completion has no distribution over every choice)."""
    p = _probs(comp.choice_logprobs, list(prior))
    if p is None:
        return None
    scores = {c: x / max(prior[c], 1e-9) for c, x in zip(prior, p, strict=True)}
    return max(scores, key=lambda c: scores[c])


async def cite_rule(
    messages: Sequence[Message],
    label: str | None,
    rule_ids: Sequence[str],
    student: ChatClient,
    prior: CitePrior | None = None,
) -> tuple[str, Completion | None]:
    """The rule the student says decided ``label`` (see the module docstring), with the
    completion it cost (None when no call was needed). ``rule_ids``: the listed rules' ids in
    list order (number k is ``rule_ids[k - 1]``); ``prior`` (``cite_prior``) calibrates it."""
    if label is None:
        return INVALID_RULE, None
    if not rule_ids:
        return NO_RULE, None
    try:
        comp = await student.complete(
            _cite_messages(messages, label, rule_ids), cite_options(rule_ids)
        )
    except ContextOverflow:
        return INVALID_RULE, None
    chosen = _calibrated_choice(comp, prior[label]) if prior and label in prior else None
    return parse_rule(chosen if chosen is not None else comp.text, rule_ids), comp


def with_citation(p: Prediction, rule: str, comp: Completion | None) -> Prediction:
    """``p`` with its citation; its cost (tokens, latency) is added to the answer's, so what
    an item costs includes what citing it cost. An invalid reply is kept in ``raw``."""
    if comp is None:
        return replace(p, rule=rule)
    raw = p.raw + (f"\n[cite] {comp.text}" if rule == INVALID_RULE else "")
    return replace(
        p,
        rule=rule,
        raw=raw,
        latency_s=p.latency_s + comp.latency_s,
        prompt_tokens=p.prompt_tokens + comp.usage.prompt_tokens,
        completion_tokens=p.completion_tokens + comp.usage.completion_tokens,
        cached_prompt_tokens=p.cached_prompt_tokens + comp.usage.cached_prompt_tokens,
        cached=p.cached and comp.cached,
    )


def _probs(
    choice_logprobs: Mapping[str, float] | None, labels: Sequence[str]
) -> list[float] | None:
    if not choice_logprobs or any(lab not in choice_logprobs for lab in labels):
        return None
    return [math.exp(choice_logprobs[lab]) for lab in labels]


def _messages(system_prompt: str, shots: Sequence[Shot], user: str) -> list[Message]:
    msgs = [Message("system", system_prompt)]
    for text, label in shots:
        msgs += [Message("user", text), Message("assistant", label)]
    return [*msgs, Message("user", user)]


async def label_prior(
    *,
    system_prompt: str,
    user_template: str,
    labels: Sequence[str],
    student: ChatClient,
    shots: Sequence[Shot] = (),
) -> dict[str, float] | None:
    """The student's label distribution on content-free inputs (None when the backend gives
    no distribution)."""
    names = template_fields(user_template)
    acc = [0.0] * len(labels)
    for filler in CONTENT_FREE:
        messages = _messages(
            system_prompt, shots, render_template(user_template, dict.fromkeys(names, filler))
        )
        comp = await student.complete(messages, classify_options(labels))
        p = _probs(comp.choice_logprobs, labels)
        if p is None:
            return None
        acc = [a + x / len(CONTENT_FREE) for a, x in zip(acc, p, strict=True)]
    return dict(zip(labels, acc, strict=True))


async def classify_one(
    item_id: str,
    fields: Mapping[str, str],
    *,
    system_prompt: str,
    user_template: str,
    labels: Sequence[str],
    student: ChatClient,
    gold: str | None = None,
    prior: Mapping[str, float] | None = None,
    shots: Sequence[Shot] = (),
    cite: Sequence[str] | None = None,
    cite_calibration: CitePrior | None = None,
) -> Prediction:
    """One item's answer; a prompt over the context window is an invalid outcome. ``cite``
    (the rule ids the prompt shows; None: do not cite) adds the cited rule, calibrated with
    ``cite_calibration`` (``cite_prior``) when given."""
    messages = _messages(system_prompt, shots, render_template(user_template, fields))
    pred = await _answer(messages, item_id, labels, student, gold, prior)
    if cite is None:
        return pred
    rule, comp = await cite_rule(messages, pred.label, cite, student, cite_calibration)
    return with_citation(pred, rule, comp)


async def _answer(
    messages: Sequence[Message],
    item_id: str,
    labels: Sequence[str],
    student: ChatClient,
    gold: str | None,
    prior: Mapping[str, float] | None,
) -> Prediction:
    try:
        comp = await student.complete(messages, classify_options(labels))
    except ContextOverflow as e:
        # One over-long input must not sink a whole evaluation: it is an invalid outcome,
        # scored as wrong and counted as an overflow in the summary.
        return Prediction(
            id=item_id,
            label=None,
            raw=f"{OVERFLOW}: {e}",
            confidence=None,
            latency_s=0.0,
            prompt_tokens=0,
            completion_tokens=0,
            cached_prompt_tokens=0,
            cached=False,
            gold=gold,
        )
    label = parse_label(comp.text, labels)
    conf = None
    scores = None
    p = _probs(comp.choice_logprobs, labels)
    if p is not None:
        if prior is not None:
            p = [x / max(prior[lab], 1e-9) for x, lab in zip(p, labels, strict=True)]
        total = sum(p) or 1.0
        scores = {lab: x / total for lab, x in zip(labels, p, strict=True)}
        label = max(labels, key=lambda lab: scores[lab])
        conf = scores[label]
    return Prediction(
        id=item_id,
        label=label,
        raw=comp.text,
        confidence=conf,
        latency_s=comp.latency_s,
        prompt_tokens=comp.usage.prompt_tokens,
        completion_tokens=comp.usage.completion_tokens,
        cached_prompt_tokens=comp.usage.cached_prompt_tokens,
        cached=comp.cached,
        gold=gold,
        scores=scores,
    )


async def classify(
    items: Sequence[Item],
    *,
    system_prompt: str,
    user_template: str,
    labels: Sequence[str],
    student: ChatClient,
    calibrate: bool = True,
    shots: Sequence[Shot] = (),
    on_done: Callable[[], None] | None = None,
    prior: Mapping[str, float] | None = None,
    cite: Sequence[str] | None = None,
    cite_calibration: CitePrior | Literal["measure"] | None = MEASURE,
) -> list[Prediction]:
    """Classify (id, fields, gold-or-None) items; order of the result follows the input.
    A given ``prior`` is used as is; else with ``calibrate`` it is measured first (three
    calls). ``cite``: the rule ids to cite from (see the module docstring);
    ``cite_calibration``: their prior from ``cite_prior`` (None: uncalibrated; by default it
    is measured first — a caller answering many batches measures it once and passes it)."""
    if calibrate and prior is None:
        prior = await label_prior(
            system_prompt=system_prompt,
            user_template=user_template,
            labels=labels,
            student=student,
            shots=shots,
        )
    cprior = None if cite_calibration == MEASURE else cite_calibration
    if cite and cite_calibration == MEASURE:
        cprior = await cite_prior(
            Prompt(system_prompt, user_template, tuple(shots)), labels, cite, student
        )

    async def one(item: Item) -> Prediction:
        p = await classify_one(
            item[0],
            item[1],
            system_prompt=system_prompt,
            user_template=user_template,
            labels=labels,
            student=student,
            gold=item[2],
            prior=prior,
            shots=shots,
            cite=cite,
            cite_calibration=cprior,
        )
        if on_done is not None:
            on_done()
        return p

    return await gather_all(one(it) for it in items)


async def classify_with(
    prompt: Prompt,
    items: Sequence[Item],
    labels: Sequence[str],
    student: ChatClient,
    *,
    calibrate: bool = True,
    prior: Mapping[str, float] | None = None,
    on_done: Callable[[], None] | None = None,
    cite: Sequence[str] | None = None,
    cite_calibration: CitePrior | Literal["measure"] | None = MEASURE,
) -> list[Prediction]:
    """``classify`` with a whole ``Prompt`` (system prompt, user template, demonstrations)."""
    return await classify(
        items,
        system_prompt=prompt.system,
        user_template=prompt.user_template,
        labels=labels,
        student=student,
        calibrate=calibrate,
        shots=prompt.shots,
        on_done=on_done,
        prior=prior,
        cite=cite,
        cite_calibration=cite_calibration,
    )
