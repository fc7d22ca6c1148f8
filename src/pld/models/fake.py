"""Test doubles that go through the real client path (cache, retries, accounting).

``ScriptedChatModel`` answers from a script (a list, or a function of the request) and records
every request; an entry that is an exception is raised instead, for fault injection.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pld.models.base import Completion, GenOptions, Message, Usage

Reply = str | Exception
Responder = Callable[[Sequence[Message], GenOptions], Reply]


@dataclass
class Request:
    """One request as the fake model received it, so a test can assert on exactly what was sent."""

    messages: tuple[Message, ...]
    options: GenOptions


class ScriptedChatModel:
    """A ``ChatModel`` that replies from a script (a list, or a function of the request), records
    every request and raises scripted exceptions: unit tests and fault injection drive the real
    client path with it instead of a real model."""

    def __init__(
        self,
        script: Sequence[Reply] | Responder,
        *,
        name: str = "fake",
        delay_s: float = 0.0,
    ) -> None:
        self._script = script
        self._i = 0
        self.name = name
        self.delay_s = delay_s
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def identity(self) -> str:
        return f"fake:{self.name}"

    async def complete(self, messages: Sequence[Message], options: GenOptions) -> Completion:
        self.requests.append(Request(tuple(messages), options))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if callable(self._script):
                reply = self._script(messages, options)
            else:
                if self._i >= len(self._script):
                    raise AssertionError(f"script exhausted after {self._i} replies")
                reply = self._script[self._i]
                self._i += 1
        finally:
            self.in_flight -= 1
        if isinstance(reply, Exception):
            raise reply
        text = reply
        finish = "stop"
        if options.choices is not None and text not in options.choices:
            finish = "stop"
        words = text.split()
        if len(words) > options.max_tokens:
            text, finish = " ".join(words[: options.max_tokens]), "length"
        for s in options.stop:
            if s in text:
                text = text[: text.index(s)]
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return Completion(
            text=text,
            finish_reason=finish,
            usage=Usage(prompt_tokens, max(1, len(text.split()))),
            latency_s=self.delay_s,
            model=self.identity,
        )


class HashEmbedder:
    """Deterministic bag-of-words embeddings: texts sharing words are close in cosine."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls = 0

    @property
    def identity(self) -> str:
        return f"fake-embed:hash{self.dim}"

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = int(hashlib.md5(w.strip(".,;:!?").encode()).hexdigest(), 16)
                out[i, h % self.dim] += 1.0
            n = float(np.linalg.norm(out[i]))
            if n > 0:
                out[i] /= n
            else:
                out[i, 0] = 1.0
        return out
