"""The OpenAI Batch API line formats, and nothing else (no files, no cache).

Input line:   {"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
Output line:  {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}
Error line:   {"id", "custom_id", "response": null, "error": {"code", "message"}}
              (providers also put a failed request in the error file as a non-200 response
              whose body is {"error": {...}}; both forms are read.)

``custom_id`` is ``pld-`` + pld's cache key, so a result line names the exact cache entry it
fills and nothing else is needed to file it; the prefix tells a pld line from anyone else's.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pld.errors import ConfigError
from pld.models.base import ChatModel, Completion, GenOptions, Message
from pld.models.openai_compat import request_body

CUSTOM_ID_PREFIX = "pld-"
CHAT_URL = "/v1/chat/completions"
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_ROLES = ("system", "user", "assistant")


def custom_id_for(key: str) -> str:
    """The ``custom_id`` a request goes out under: the prefix marks it as pld's, the key names the
    cache entry its reply fills (``key_of`` reverses it)."""
    return CUSTOM_ID_PREFIX + key


def key_of(custom_id: str) -> str | None:
    """The cache key a custom_id names, or None when it is not a pld custom_id."""
    if not custom_id.startswith(CUSTOM_ID_PREFIX):
        return None
    key = custom_id[len(CUSTOM_ID_PREFIX) :]
    return key if _KEY_RE.match(key) else None


@dataclass(frozen=True)
class BatchTarget:
    """What goes into every body: the provider's model name and how it takes constraints."""

    model: str
    dialect: str = "openai"

    @classmethod
    def for_model(cls, model: ChatModel) -> BatchTarget:
        """An ``openai:`` backend knows its wire name and dialect; any other backend (the
        embedded model) is addressed by its identity and the plain OpenAI dialect, which is
        what ``pld teacher run`` and vLLM's ``run_batch`` read."""
        from pld.models.openai_compat import OpenAIChatModel

        if isinstance(model, OpenAIChatModel):
            return cls(model.model, model.dialect)
        return cls(model.identity, "openai")


def input_line(
    key: str, messages: Sequence[Message], options: GenOptions, target: BatchTarget
) -> dict[str, Any]:
    """One Batch API request line: the same body a live call would send, so a batch reply answers
    exactly the request that missed the cache."""
    return {
        "custom_id": custom_id_for(key),
        "method": "POST",
        "url": CHAT_URL,
        "body": request_body(target.model, messages, options, target.dialect),
    }


def _schema_of(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, Mapping) or rf.get("type") not in ("json_schema", "text"):
            raise ValueError(f"response_format {rf!r} is not supported (json_schema or text)")
        if rf.get("type") == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema")
            if not isinstance(schema, Mapping):
                raise ValueError("response_format.json_schema.schema is missing")
            return schema
    for name in ("json_schema", "guided_json"):
        if body.get(name) is not None:
            if not isinstance(body[name], Mapping):
                raise ValueError(f"{name} is not a JSON object")
            return dict(body[name])
    return None


_BODY_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "seed",
    "stop",
    "response_format",
    "json_schema",
    "guided_json",
    "guided_choice",
    "logprobs",
    "top_logprobs",
    "n",
}


def request_from_body(body: Mapping[str, Any]) -> tuple[list[Message], GenOptions]:
    """Invert ``request_body``: the (messages, options) a body asks for, so any ``ChatModel``
    can answer it the way a server would. A field it cannot honour (a GBNF grammar, top_p,
    n > 1) is an error, never silently dropped. Raises ValueError naming the field."""
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        raise ValueError(f"body field(s) {', '.join(unknown)} cannot be honoured by this runner")
    if body.get("n", 1) != 1:
        raise ValueError("n must be 1")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("body.messages must be a non-empty list")
    messages = []
    for i, m in enumerate(msgs):
        if (
            not isinstance(m, Mapping)
            or m.get("role") not in _ROLES
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError(f"body.messages[{i}] needs a role ({'/'.join(_ROLES)}) and text")
        messages.append(Message(m["role"], m["content"]))
    stop = body.get("stop") or ()
    choices = body.get("guided_choice")
    try:
        options = GenOptions(
            max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
            temperature=float(body.get("temperature", 1.0)),
            seed=int(body["seed"]) if body.get("seed") is not None else None,
            stop=(stop,) if isinstance(stop, str) else tuple(str(s) for s in stop),
            json_schema=_schema_of(body),
            choices=tuple(str(c) for c in choices) if choices is not None else None,
            logprobs=bool(body.get("logprobs", False)),
        )
    except (ConfigError, TypeError) as e:
        raise ValueError(str(e)) from e
    return messages, options


def completion_body(comp: Completion, *, model: str, custom_id: str) -> dict[str, Any]:
    """A ``chat.completion`` body for one answer, as an OpenAI-compatible server returns it."""
    u = comp.usage
    logprobs = None
    if comp.token_logprobs is not None:
        logprobs = {
            "content": [
                {"token": t.token, "logprob": t.logprob, "top_logprobs": []}
                for t in comp.token_logprobs
            ]
        }
    return {
        "id": "chatcmpl-" + uuid.uuid5(uuid.NAMESPACE_URL, custom_id).hex,
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": comp.text},
                "logprobs": logprobs,
                "finish_reason": comp.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
        },
    }


def output_line(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A successful result line in the provider's format, so ``pld teacher run`` writes files the
    importer reads exactly like a provider's."""
    return {
        "id": "batch_req_" + uuid.uuid4().hex,
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": uuid.uuid4().hex, "body": dict(body)},
        "error": None,
    }


def error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """A failed result line in the provider's format: its request stays pending, goes out again."""
    return {
        "id": "batch_req_" + uuid.uuid4().hex,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def dumps_line(obj: Mapping[str, Any]) -> str:
    """One JSONL line. ensure_ascii keeps every line pure ASCII, so no provider or editor can
    mangle the file's encoding on the way."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n"
