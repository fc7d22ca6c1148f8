"""The openai backend against a real llama.cpp HTTP server, and fault injection through a
tiny scripted HTTP stub (429 with Retry-After, 5xx, hung connections)."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pld.cache import Cache
from pld.errors import BackendTimeout, BackendUnavailable
from pld.models.base import GenOptions, Message
from pld.models.client import Accountant, ChatClient, Limits
from pld.models.openai_compat import OpenAIChatModel

pytestmark = pytest.mark.integration


def test_server_stopped_mid_run_gives_unavailable_and_keeps_results(
    own_llama_server: Any, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "c.sqlite")
    acct = Accountant()
    model = OpenAIChatModel(
        "smollm2", base_url=own_llama_server.base_url, dialect="llamacpp", timeout_s=60
    )
    client = ChatClient(
        model,
        role="student",
        accountant=acct,
        cache=cache,
        limits=Limits(max_retries=2, backoff_base_s=0.05),
    )
    opts = GenOptions(max_tokens=4)

    before: dict[str, Any] = {}

    async def go() -> None:
        for i in range(3):
            await client.complete([Message("user", f"Say {i}.")], opts)
        # on a loaded machine the calls above may have needed a retry of their own: count
        # only what the call to the dead server adds
        before.update(acct.by_role()["student"])
        own_llama_server.kill()
        with pytest.raises(BackendUnavailable, match="gave up after 3 attempts"):
            await client.complete([Message("user", "Say 3.")], opts)

    asyncio.run(go())
    stats = acct.by_role()["student"]
    assert stats["failures"] - before["failures"] == 1
    assert stats["retries"] - before["retries"] == 2
    assert cache.stats()["completions"] == 3  # completed results kept
    # and they are served without the server
    again = asyncio.run(client.complete([Message("user", "Say 1.")], opts))
    assert again.cached


class Stub:
    """A scripted OpenAI-compatible endpoint: each request pops the next behaviour."""

    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.script = list(script)
        self.times: list[float] = []
        stub = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", 0))
                self.rfile.read(n)
                stub.times.append(time.monotonic())
                step: tuple[str, Any] = stub.script.pop(0) if stub.script else ("ok", "done")
                kind, arg = step
                if kind == "hang":
                    time.sleep(arg)
                    return
                if kind == "status":
                    code, headers = arg
                    self.send_response(code)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    body = json.dumps({"error": {"message": f"status {code}"}}).encode()
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                body = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "stub",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": arg},
                            }
                        ],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def stub_factory() -> Iterator[Any]:
    made: list[Stub] = []

    def make(script: list[tuple[str, Any]]) -> Stub:
        s = Stub(script)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _client(url: str, acct: Accountant, **limits: Any) -> ChatClient:
    model = OpenAIChatModel("stub", base_url=url, timeout_s=limits.pop("sdk_timeout", 30))
    return ChatClient(model, role="teacher", accountant=acct, limits=Limits(**limits))


def test_429_storm_honours_retry_after(stub_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real = asyncio.sleep

    async def record(d: float) -> None:
        waits.append(d)
        await real(0)

    monkeypatch.setattr("pld.models.client.asyncio.sleep", record)
    stub = stub_factory([("status", (429, {"retry-after": "2"}))] * 3 + [("ok", "fine")])
    acct = Accountant()
    got = asyncio.run(
        _client(stub.url, acct, max_retries=5).complete(
            [Message("user", "x")], GenOptions(max_tokens=2)
        )
    )
    assert got.text == "fine"
    assert len(waits) == 3 and all(2.0 <= w <= 2.1 for w in waits)
    assert acct.by_role()["teacher"]["errors"] == {"RateLimited": 3}


def test_5xx_then_success(stub_factory: Any) -> None:
    stub = stub_factory([("status", (502, {})), ("status", (500, {})), ("ok", "recovered")])
    acct = Accountant()
    got = asyncio.run(
        _client(stub.url, acct, max_retries=3, backoff_base_s=0.01).complete(
            [Message("user", "x")], GenOptions(max_tokens=2)
        )
    )
    assert got.text == "recovered" and len(stub.times) == 3


def test_hung_connection_hits_the_per_call_timeout(stub_factory: Any) -> None:
    stub = stub_factory([("hang", 3.0), ("hang", 3.0)])
    acct = Accountant()
    t0 = time.monotonic()
    with pytest.raises(BackendTimeout):
        asyncio.run(
            _client(stub.url, acct, max_retries=1, backoff_base_s=0.01, sdk_timeout=0.3).complete(
                [Message("user", "x")], GenOptions(max_tokens=2)
            )
        )
    assert time.monotonic() - t0 < 2.5  # both attempts cut well before the 3 s hang
    assert acct.by_role()["teacher"]["errors"] == {"BackendTimeout": 2}


def test_endpoint_down_at_start(tmp_path: Path) -> None:
    model = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", timeout_s=2)
    c = ChatClient(model, role="teacher", limits=Limits(max_retries=1, backoff_base_s=0.01))
    with pytest.raises(BackendUnavailable, match="check that the server is running"):
        asyncio.run(c.complete([Message("user", "x")], GenOptions(max_tokens=2)))
