"""Plain data for talking to models, and the two protocols every backend implements.

A backend implements exactly one method. Retries, caching, limits and accounting are the
client's job (``pld.models.client``), so a new backend is a translation layer and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from pld.errors import ConfigError

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat turn. Frozen: messages go into cache keys, so they must not change afterwards."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        """The wire and cache-key form; cache keys depend on it, so its shape must stay stable."""
        return {"role": self.role, "content": self.content}


# Valid ranges of the numeric backend options, by the name a model spec uses. Out of range is
# an error at once: llama.cpp accepts slots=0 and then waits forever for a free slot, and takes
# a negative ctx only to fail later with "Failed to init server".
OPTION_RANGES: dict[str, tuple[float, float, str]] = {
    "ctx": (256, 1 << 20, "tokens of context"),
    "slots": (1, 64, "parallel sequences"),
    "threads": (0, 1024, "CPU threads; 0 = all cores"),
    "timeout": (0.001, 86400.0, "seconds per request"),
}


def check_option(name: str, value: float, where: str = "") -> None:
    """Raise a ConfigError naming the option and its valid range when ``value`` is outside it
    (NaN and infinities included)."""
    lo, hi, meaning = OPTION_RANGES[name]
    if not lo <= value <= hi:  # also catches NaN
        lo_s = "> 0" if name == "timeout" else f">= {lo:g}"
        raise ConfigError(
            f"option {name}={value!r}{where} is out of range: {name} ({meaning}) must be "
            f"{lo_s} and <= {hi:.10g}"
        )


@dataclass(frozen=True)
class GenOptions:
    """Generation options. ``json_schema`` and ``choices`` are output constraints: a backend
    that can enforce them must; the caller still validates what comes back."""

    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None
    choices: tuple[str, ...] | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.json_schema is not None and self.choices is not None:
            raise ConfigError("give either json_schema or choices as the output constraint")
        if self.choices is not None:
            if len(self.choices) < 1 or any(not c for c in self.choices):
                raise ConfigError("choices must be a non-empty list of non-empty strings")
            if len(set(self.choices)) != len(self.choices):
                raise ConfigError(f"choices must be distinct: {list(self.choices)}")

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form with a stable order, used in cache keys."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["choices"] = list(self.choices) if self.choices is not None else None
        d["json_schema"] = (
            json.loads(json.dumps(self.json_schema, sort_keys=True))
            if self.json_schema is not None
            else None
        )
        return d


@dataclass(frozen=True)
class Usage:
    """Tokens one call consumed, as the backend reported them: what the client prices and sums."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
        )


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token and its log-probability, returned when ``GenOptions.logprobs`` asks;
    cached and written to batch result lines with its completion, so nothing returned is lost."""

    token: str
    logprob: float


@dataclass(frozen=True)
class Completion:
    """One model answer.

    ``choice_logprobs`` maps each allowed choice to its log-probability when the backend could
    score the closed choice list (the label distribution); ``cached`` marks a cache hit, which
    cost no call.
    """

    text: str
    finish_reason: str
    usage: Usage
    latency_s: float
    token_logprobs: tuple[TokenLogprob, ...] | None = None
    choice_logprobs: Mapping[str, float] | None = None
    cached: bool = False
    model: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The form stored in the cache and read back by ``from_json``. ``cached`` is left out: it
        says where an answer came from, not what it was."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": asdict(self.usage),
            "latency_s": self.latency_s,
            "token_logprobs": (
                [[t.token, t.logprob] for t in self.token_logprobs]
                if self.token_logprobs is not None
                else None
            ),
            "choice_logprobs": dict(self.choice_logprobs) if self.choice_logprobs else None,
            "model": self.model,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, cached: bool = False) -> Completion:
        """Rebuild a completion stored by ``to_json``; ``cached`` marks it as a cache hit."""
        tl = d.get("token_logprobs")
        return cls(
            text=str(d["text"]),
            finish_reason=str(d["finish_reason"]),
            usage=Usage(**d["usage"]),
            latency_s=float(d["latency_s"]),
            token_logprobs=(
                tuple(TokenLogprob(str(t), float(lp)) for t, lp in tl) if tl is not None else None
            ),
            choice_logprobs=d.get("choice_logprobs"),
            cached=cached,
            model=str(d.get("model", "")),
            extra=d.get("extra") or {},
        )


@runtime_checkable
class ChatModel(Protocol):
    """Anything that turns a list of messages into one completion."""

    @property
    def identity(self) -> str:
        """A stable name for the model's weights and behaviour: part of every cache key.
        Never contains secrets, base URLs or headers."""
        ...

    async def complete(self, messages: Sequence[Message], options: GenOptions) -> Completion:
        """Send one request and return the model's answer. Raise a ``BackendError`` (retryable
        or not) on failure, and enforce ``options.json_schema``/``choices`` where the backend
        can; retries, caching and accounting are the client's job, not the backend's."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into fixed-width vectors."""

    @property
    def identity(self) -> str:
        """A stable name for the embedding model: part of every embedding cache key. Never
        contains secrets, base URLs or headers."""
        ...

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One row per text, in order, all of one width. Raise a ``BackendError`` on failure:
        retries, caching and batching are the client's job, not the backend's."""
        ...
