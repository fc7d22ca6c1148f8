"""Citation with the embedded SmolLM2 (issue 14.1): a 3-rule rulebook on 6 demo tickets; every
item gets a rule id of the rulebook or ``none`` from the constrained choice, the labels and
confidences are those of the uncited prediction, and citing costs one decoded token (the list
numbers 1-3 and ``none`` have distinct first tokens)."""

from __future__ import annotations

import pytest

from pld.models.client import ChatClient
from pld.models.local import LocalChatModel
from pld.predictions import NO_RULE
from pld.rulebook import Rulebook
from pld.rules import InstructionSet
from pld.tasks.base import stratified_sample
from pld.tasks.files import load_task
from tests.service_support import support_rules

pytestmark = pytest.mark.integration


def test_predict_cite_returns_a_rule_id_or_none_per_item(smollm2_chat: LocalChatModel) -> None:
    task = load_task("demo")
    rules = InstructionSet(support_rules().instructions[:3], version=1)
    rb = Rulebook.build(task, rules, calibrate=True)
    items = stratified_sample(task.examples, 6, seed=5)
    plain = rb.predict(items, ChatClient(smollm2_chat, role="student"))
    cited = rb.predict(items, ChatClient(smollm2_chat, role="student"), cite=True)
    assert rb.cite_ids == ("R1", "R2", "R3")
    assert [p.rule for p in cited] and all(p.rule in {"R1", "R2", "R3", NO_RULE} for p in cited)
    assert [(p.label, p.confidence) for p in cited] == [(p.label, p.confidence) for p in plain]
    extra = [c.completion_tokens - p.completion_tokens for c, p in zip(cited, plain, strict=True)]
    assert extra == [1] * len(items), extra
