"""Any OpenAI-compatible endpoint through the official ``openai`` SDK.

``dialect`` says how the endpoint accepts output constraints, because the OpenAI wire format
has no closed-choice constraint and servers extend it differently:
  * ``openai``   — JSON schema as ``response_format``; choices by strict parsing;
  * ``llamacpp`` — llama.cpp server: ``json_schema`` / GBNF ``grammar`` in the body;
  * ``vllm``     — vLLM / SGLang: ``guided_json`` / ``guided_choice`` in the body.
The SDK's own retries are off: the client wrapper owns retries, so they are counted once.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import openai
from numpy.typing import NDArray

from pld.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextOverflow,
    RateLimited,
)
from pld.models.base import Completion, GenOptions, Message, TokenLogprob, Usage, check_option

Dialect = Literal["openai", "llamacpp", "vllm"]
DIALECTS: tuple[str, ...] = ("openai", "llamacpp", "vllm")
NO_KEY = "sk-no-key-required"


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        dt = email.utils.parsedate_to_datetime(ra)
        return max(0.0, dt.timestamp() - time.time()) if dt else None


def map_openai_error(e: Exception, *, what: str, key_env: str) -> BackendError:
    """Translate SDK exceptions into pld's tree. Messages never include the key."""
    if isinstance(e, openai.APITimeoutError):
        return BackendTimeout(f"{what}: request timed out")
    if isinstance(e, openai.APIConnectionError):
        return BackendUnavailable(
            f"{what}: cannot reach the endpoint ({type(e.__cause__ or e).__name__}); "
            "check that the server is running and the base URL is right"
        )
    if isinstance(e, openai.RateLimitError):
        return RateLimited(
            f"{what}: rate limited (429)",
            retry_after=_retry_after(dict(e.response.headers)),
        )
    if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
        return BackendResponseError(
            f"{what}: the endpoint refused the API key ({e.status_code}); put a valid key in "
            f"${key_env}, or name the variable that holds one with ?key_env=VAR in the spec",
            status=e.status_code,
        )
    if isinstance(e, openai.NotFoundError):
        return BackendResponseError(
            f"{what}: not found (404): check the model name and base URL in the spec",
            status=404,
        )
    if isinstance(e, openai.APIStatusError):
        body = str(getattr(e, "message", "")) or ""
        if e.status_code == 400 and ("context" in body.lower() and "exceed" in body.lower()):
            return ContextOverflow(f"{what}: {body[:300]}", status=400)
        return BackendResponseError(
            f"{what}: HTTP {e.status_code}: {body[:300]}", status=e.status_code
        )
    return BackendResponseError(f"{what}: {type(e).__name__}: {e}", status=None)


class _OpenAIBase:
    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        dialect: str = "openai",
        timeout_s: float = 600.0,
    ) -> None:
        if dialect not in DIALECTS:
            raise ConfigError(f"unknown dialect {dialect!r}; use one of {', '.join(DIALECTS)}")
        check_option("timeout", timeout_s)
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.dialect: Dialect = dialect  # type: ignore[assignment]
        self.timeout_s = timeout_s
        key = api_key or os.environ.get(api_key_env)
        if not key:
            if base_url is None:
                raise ConfigError(
                    f"no API key: set the environment variable {api_key_env} "
                    "(or name another with ?key_env=VAR in the model spec)"
                )
            key = NO_KEY  # self-hosted servers usually accept any key
        self.__key = key

    def _client(self) -> openai.AsyncOpenAI:
        # One client per call: httpx pools are bound to an event loop, and pld may run several
        # loops in one process (CLI commands, tests). The connection cost is negligible next to
        # a model call.
        return openai.AsyncOpenAI(
            api_key=self.__key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(model={self.model!r}, dialect={self.dialect!r})"


def _constraint(options: GenOptions, dialect: str) -> tuple[dict[str, Any], dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if options.json_schema is not None:
        schema = dict(options.json_schema)
        if dialect == "openai":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema},
            }
        elif dialect == "llamacpp":
            extra["json_schema"] = schema
        else:
            extra["guided_json"] = schema
    elif options.choices is not None:
        if dialect == "llamacpp":
            extra["grammar"] = "root ::= " + " | ".join(
                '"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in options.choices
            )
        elif dialect == "vllm":
            extra["guided_choice"] = list(options.choices)
    return kwargs, extra


def request_parts(
    model: str, messages: Sequence[Message], options: GenOptions, dialect: str = "openai"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chat request as (SDK keyword arguments, dialect fields for ``extra_body``).

    Pure, so the live call and a batch export (``pld.batch``) send byte-identical bodies: a
    reply imported from a batch then answers exactly the question a live call would have asked.
    """
    kwargs, extra = _constraint(options, dialect)
    kwargs = {
        "model": model,
        "messages": [m.to_dict() for m in messages],
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        **kwargs,
    }
    if options.stop:
        kwargs["stop"] = list(options.stop)
    if options.seed is not None:
        kwargs["seed"] = options.seed
    if options.logprobs:
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = 5
    return kwargs, extra


def request_body(
    model: str, messages: Sequence[Message], options: GenOptions, dialect: str = "openai"
) -> dict[str, Any]:
    """The JSON body the SDK puts on the wire (it merges ``extra_body`` at the top level)."""
    kwargs, extra = request_parts(model, messages, options, dialect)
    return {**kwargs, **extra}


def completion_from_body(
    body: Mapping[str, Any], *, options: GenOptions, identity: str, latency_s: float
) -> Completion:
    """A ``chat.completion`` JSON body → pld's Completion. Shared by the live call and the
    batch import so a cached reply has the same shape whichever way it arrived. Raises
    ``BackendResponseError`` on a body without a usable first choice."""
    what = identity or "chat completion"
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise BackendResponseError(f"{what}: reply has no choices", status=502)
    ch = choices[0]
    msg = ch.get("message")
    if not isinstance(msg, Mapping):
        raise BackendResponseError(f"{what}: reply's first choice has no message", status=502)
    text = msg.get("content") or ""
    if not isinstance(text, str):
        raise BackendResponseError(f"{what}: reply content is not a string", status=502)
    try:
        u = body.get("usage") or {}
        details = u.get("prompt_tokens_details") or {}
        usage = Usage(
            prompt_tokens=int(u.get("prompt_tokens") or 0),
            completion_tokens=int(u.get("completion_tokens") or 0),
            cached_prompt_tokens=int(details.get("cached_tokens") or 0),
        )
        token_lp = None
        lp = ch.get("logprobs") or {}
        if options.logprobs and lp.get("content"):
            token_lp = tuple(
                TokenLogprob(str(t["token"]), float(t["logprob"])) for t in lp["content"]
            )
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise BackendResponseError(f"{what}: malformed usage or logprobs: {e}", status=502) from e
    return Completion(
        text=text,
        finish_reason=str(ch.get("finish_reason") or "stop"),
        usage=usage,
        latency_s=latency_s,
        token_logprobs=token_lp,
        model=identity,
    )


class OpenAIChatModel(_OpenAIBase):
    """A ``ChatModel`` for any OpenAI-compatible chat endpoint; ``dialect`` says how the server
    takes output constraints, since llama.cpp and vLLM read them from different request fields."""

    @property
    def identity(self) -> str:
        return f"openai:{self.model}"

    async def complete(self, messages: Sequence[Message], options: GenOptions) -> Completion:
        kwargs, extra = request_parts(self.model, messages, options, self.dialect)
        t0 = time.perf_counter()
        try:
            async with self._client() as client:
                resp = await client.chat.completions.create(extra_body=extra or None, **kwargs)
        except openai.OpenAIError as e:
            raise map_openai_error(e, what=f"{self.identity}", key_env=self.api_key_env) from e
        latency = time.perf_counter() - t0
        # The SDK builds its models without validation; dump without serializer warnings.
        body = resp.model_dump(warnings=False)
        return completion_from_body(
            body, options=options, identity=self.identity, latency_s=latency
        )


class OpenAIEmbedder(_OpenAIBase):
    """An ``Embedder`` for any OpenAI-compatible embeddings endpoint."""

    @property
    def identity(self) -> str:
        return f"openai-embed:{self.model}"

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            async with self._client() as client:
                resp = await client.embeddings.create(model=self.model, input=list(texts))
        except openai.OpenAIError as e:
            raise map_openai_error(e, what=self.identity, key_env=self.api_key_env) from e
        data = sorted(resp.data, key=lambda d: d.index)
        return np.asarray([d.embedding for d in data], dtype=np.float32)
