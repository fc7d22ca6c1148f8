"""One contract, every backend: the scripted fake, llama.cpp in-process, and the OpenAI SDK
against a real llama.cpp HTTP server on 127.0.0.1 (scikit-learn's check_estimator idea)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from pld.models.base import ChatModel, Embedder, GenOptions, Message
from pld.models.fake import HashEmbedder, ScriptedChatModel
from pld.models.openai_compat import OpenAIChatModel, OpenAIEmbedder

pytestmark = pytest.mark.integration


def _fake_reply(messages: Any, options: GenOptions) -> str:
    if options.choices:
        return options.choices[-1]
    return "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and then some more words to fill the budget"


@pytest.fixture(params=["fake", "local", "openai"])
def backend(request: pytest.FixtureRequest) -> tuple[ChatModel, Embedder]:
    if request.param == "fake":
        return ScriptedChatModel(_fake_reply), HashEmbedder(32)
    if request.param == "local":
        return request.getfixturevalue("smollm2_chat"), request.getfixturevalue("smollm2_embedder")
    server = request.getfixturevalue("llama_server")
    return (
        OpenAIChatModel("smollm2", base_url=server.base_url, dialect="llamacpp"),
        OpenAIEmbedder("smollm2", base_url=server.base_url),
    )


COUNT = [Message("user", "Count from 1 to 20, separated by commas.")]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_text_and_usage(backend: tuple[ChatModel, Embedder]) -> None:
    chat, _ = backend
    c = run(chat.complete(COUNT, GenOptions(max_tokens=16)))
    assert isinstance(c.text, str) and c.text.strip()
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0
    assert c.latency_s >= 0


def test_max_tokens_honoured(backend: tuple[ChatModel, Embedder]) -> None:
    chat, _ = backend
    c = run(chat.complete(COUNT, GenOptions(max_tokens=5)))
    assert c.usage.completion_tokens <= 5
    assert c.finish_reason == "length"


def test_stop_honoured(backend: tuple[ChatModel, Embedder]) -> None:
    chat, _ = backend
    c = run(chat.complete(COUNT, GenOptions(max_tokens=40, stop=("5",))))
    assert "5" not in c.text
    assert "4" in c.text


def test_deterministic_at_temperature_zero(backend: tuple[ChatModel, Embedder]) -> None:
    chat, _ = backend
    msgs = [Message("user", "Write one sentence about the sea.")]
    # Warm the prefix first: llama.cpp evaluates the last prompt token in a batch of one once
    # the prefix is cached, and with flash attention off (pld's CPU default) that can change a
    # long greedy generation relative to the very first, uncached call (README, Model specs).
    run(chat.complete(msgs, GenOptions(max_tokens=20, temperature=0.0)))
    a = run(chat.complete(msgs, GenOptions(max_tokens=20, temperature=0.0)))
    b = run(chat.complete(msgs, GenOptions(max_tokens=20, temperature=0.0)))
    assert a.text == b.text


@pytest.mark.parametrize(
    ("question", "choices"),
    [
        ("Is fire hot?", ("yes", "no")),
        ("Which team handles a refund request?", ("billing", "technical", "account", "shipping")),
        (
            "Pick a bias domain for 'the nurse was caring'.",
            ("gender", "profession", "race", "religion"),
        ),  # race/religion share a first letter
        ("Stereotype?", ("stereotype", "anti-stereotype", "unrelated")),
        ("Tricky labels", ('say "hi"', "a\\b", "Not Mentioned")),
    ],
)
def test_closed_choice_yields_a_member(
    backend: tuple[ChatModel, Embedder], question: str, choices: tuple[str, ...]
) -> None:
    chat, _ = backend
    c = run(
        chat.complete(
            [Message("system", "Answer with one option."), Message("user", question)],
            GenOptions(choices=choices),
        )
    )
    assert c.text in choices


def test_embeddings_have_a_stable_shape(backend: tuple[ChatModel, Embedder]) -> None:
    _, emb = backend
    a = run(emb.embed(["a rule about refunds", "another rule", "third"]))
    b = run(emb.embed(["a rule about refunds"]))
    assert a.ndim == 2 and a.shape[0] == 3 and a.shape[1] >= 16
    assert b.shape == (1, a.shape[1])
    assert np.allclose(a[0], b[0], atol=1e-4)
    assert np.isfinite(a).all()
