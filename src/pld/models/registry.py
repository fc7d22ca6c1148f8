"""Model spec strings → backends.

    local:smollm2                          the embedded SmolLM2-135M-Instruct GGUF
    local:/path/model.gguf?ctx=8192&slots=2&threads=2
    local:smollm2?cache_prompt=off         every prompt evaluated from scratch (order-free replies)
    openai:gpt-4.1-mini                    api.openai.com, key from $OPENAI_API_KEY
    openai:my-model@http://127.0.0.1:8000/v1?dialect=llamacpp
    openai:gemini-2.5-flash@https://generativelanguage.googleapis.com/v1beta/openai/?key_env=GEMINI_API_KEY

Options after ``?`` are validated: an unknown one is an error, never silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from pld.errors import ConfigError
from pld.models.base import OPTION_RANGES, ChatModel, Embedder, check_option

_LOCAL_OPTS = {"ctx": int, "slots": int, "threads": int, "flash_attn": str, "cache_prompt": str}
_OPENAI_OPTS = {"dialect": str, "key_env": str, "timeout": float}
_CHOICES = {
    "flash_attn": ("off", "on", "auto"),
    "cache_prompt": ("on", "off"),
    "dialect": ("openai", "llamacpp", "vllm"),
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SPEC_HELP = (
    "model specs look like local:smollm2, local:/path/model.gguf, openai:MODEL or "
    "openai:MODEL@http://host:port/v1"
)


@dataclass(frozen=True)
class Spec:
    """A model spec taken apart. It may hold credentials (URL userinfo, query values), so it is
    never stored or shown as is: ``redact_spec`` the original string instead."""

    backend: str
    model: str
    base_url: str | None = None
    options: dict[str, object] = field(default_factory=dict)


REDACTED = "REDACTED"
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?!key_env=)[^=&#;?]*(?:key|token|secret|passw|pwd|auth|sig|credential)"
    r"[^=&#;?]*=)[^&#;]*"
)


def redact_spec(spec: str) -> str:
    """The spec with credentials removed (userinfo in a URL, and the values of key=, token=,
    secret=, password=-like query parameters), for anything that is stored or shown: run.json,
    logs, terminal output, error messages. ``key_env`` names a variable, not a secret, and is
    kept. A redacted spec is refused by ``parse_spec``, so a resumed run asks for the full one
    rather than calling the endpoint without its credentials."""
    if not isinstance(spec, str):
        return spec
    out = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", spec)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", out)


def redact_specs(values: dict[str, object]) -> dict[str, object]:
    """``values`` with every string redacted by ``redact_spec`` (e.g. the CLI's arguments)."""
    return {k: redact_spec(v) if isinstance(v, str) else v for k, v in values.items()}


def parse_spec(spec: str) -> Spec:
    """Split and validate a spec string before any backend is built: an unknown backend or option,
    a bad value or a redacted spec is one ConfigError naming the fix, never ignored."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"unknown model spec {redact_spec(spec)!r}; {SPEC_HELP}")
    if f"{REDACTED}@" in spec or f"={REDACTED}" in spec:
        raise ConfigError(
            f"the model spec {spec!r} had its credentials removed when it was saved; pass the "
            "full spec again (e.g. --teacher/--student)"
        )
    shown = redact_spec(spec)
    backend, _, rest = spec.partition(":")
    if backend not in ("local", "openai"):
        raise ConfigError(f"unknown backend {backend!r} in {shown!r}; {SPEC_HELP}")
    query = ""
    if "?" in rest:
        rest, _, query = rest.rpartition("?")
    allowed = _LOCAL_OPTS if backend == "local" else _OPENAI_OPTS
    opts: dict[str, object] = {}
    for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if k not in allowed:
            raise ConfigError(
                f"unknown option {k!r} in {shown!r}; {backend} accepts: {', '.join(allowed)}"
            )
        opts[k] = _option_value(k, v, allowed[k], shown)
    base_url = None
    model = rest
    if backend == "openai" and "@" in rest:
        model, _, base_url = rest.partition("@")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base URL in {shown!r} must start with http:// or https://")
    if not model:
        raise ConfigError(f"model spec {shown!r} names no model; {SPEC_HELP}")
    return Spec(backend, model, base_url, opts)


def _option_value(name: str, raw: str, kind: type, spec: str) -> object:
    """Convert and range-check one spec option, so a bad value fails at once, naming the
    option and what it accepts, instead of inside the engine."""
    where = f" in {spec!r}"
    try:
        value = kind(raw)
    except ValueError as e:
        raise ConfigError(f"option {name}={raw!r}{where} is not a {kind.__name__}") from e
    if name in OPTION_RANGES:
        check_option(name, value, where)
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(
            f"option {name}={raw!r}{where} must be one of: {', '.join(_CHOICES[name])}"
        )
    if name == "key_env" and not _ENV_NAME.fullmatch(raw):
        raise ConfigError(
            f"option key_env={raw!r}{where} must name an environment variable (letters, "
            "digits, _), e.g. key_env=GEMINI_API_KEY"
        )
    return value


def resolve_chat(spec: str, *, api_key: str | None = None) -> ChatModel:
    """The ``ChatModel`` a spec names; backends are imported on demand, so using one never needs
    the other's dependencies."""
    s = parse_spec(spec)
    if s.backend == "local":
        from pld.models.local import LocalChatModel

        return LocalChatModel(
            s.model,
            n_ctx=int(s.options.get("ctx", 8192)),  # type: ignore[call-overload]
            n_parallel=int(s.options.get("slots", 1)),  # type: ignore[call-overload]
            n_threads=int(s.options.get("threads", 0)),  # type: ignore[call-overload]
            flash_attn=str(s.options.get("flash_attn", "off")),
            cache_prompt=s.options.get("cache_prompt", "on") == "on",
        )
    from pld.models.openai_compat import OpenAIChatModel

    return OpenAIChatModel(
        s.model,
        base_url=s.base_url,
        api_key=api_key,
        api_key_env=str(s.options.get("key_env", "OPENAI_API_KEY")),
        dialect=str(s.options.get("dialect", "openai")),
        timeout_s=float(s.options.get("timeout", 600.0)),  # type: ignore[arg-type]
    )


def resolve_embedder(spec: str, *, api_key: str | None = None) -> Embedder:
    """The ``Embedder`` a spec names; backends are imported on demand, as for ``resolve_chat``."""
    s = parse_spec(spec)
    if s.backend == "local":
        from pld.models.local import LocalEmbedder

        return LocalEmbedder(
            s.model,
            n_ctx=int(s.options.get("ctx", 2048)),  # type: ignore[call-overload]
            n_threads=int(s.options.get("threads", 0)),  # type: ignore[call-overload]
        )
    from pld.models.openai_compat import OpenAIEmbedder

    return OpenAIEmbedder(
        s.model,
        base_url=s.base_url,
        api_key=api_key,
        api_key_env=str(s.options.get("key_env", "OPENAI_API_KEY")),
        timeout_s=float(s.options.get("timeout", 600.0)),  # type: ignore[arg-type]
    )
