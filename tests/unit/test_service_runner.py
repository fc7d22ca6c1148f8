"""``serve()`` on a real uvicorn socket (127.0.0.1, an OS-chosen port) with a classifier double:
a client that hangs up mid-request, graceful stop, a port in use, a warm-up that fails."""

from __future__ import annotations

import json
import socket
import threading
from urllib.parse import urlsplit

import httpx
import pytest

from pld.errors import ConfigError, ModelNotFound
from pld.service import create_app, serve
from pld.service.runner import bind
from tests.service_support import FakeClassifier, start, wait_for

URL = "/v1/classify"


def test_real_socket_disconnect_then_graceful_stop() -> None:
    gate = threading.Event()
    fake = FakeClassifier(thread_gate=gate)
    app = create_app(fake, max_batch=1, workers=1)
    svc = app.state.service
    running, th = start(app)
    url = urlsplit(running.url)
    assert url.hostname == "127.0.0.1" and url.port
    answers: list[httpx.Response] = []

    def post_a() -> None:
        with httpx.Client(base_url=running.url, timeout=60) as c:
            answers.append(c.post(URL, json={"input": {"text": "apple"}}))

    ta = threading.Thread(target=post_a)
    ta.start()
    assert fake.entered_thread.wait(60)  # A holds the only worker
    body = json.dumps({"input": {"text": "iron"}}).encode()
    s = socket.create_connection((url.hostname, url.port))
    s.sendall(
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    wait_for(lambda: svc.batcher.depth == 1)  # B is queued behind A
    s.close()  # B hangs up
    wait_for(lambda: svc.metrics.disconnects.value() == 1)
    gate.set()
    ta.join(60)
    assert answers and answers[0].status_code == 200 and answers[0].json()["label"] == "fruit"
    with httpx.Client(base_url=running.url, timeout=60) as c:
        assert c.post(URL, json={"input": {"text": "apple pie"}}).status_code == 200
        assert c.get("/healthz").json()["status"] == "ok"
    running.stop()
    th.join(60)
    assert not th.is_alive()
    assert not svc.batcher.running and not svc.ready  # the lifespan shut the batcher down
    assert [x["text"] for call in fake.calls for x in call] == ["apple", "apple pie"]


def test_port_in_use_is_a_one_line_config_error() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            bind("127.0.0.1", port)
    finally:
        taken.close()


class _NoModel(FakeClassifier):
    async def warmup(self) -> None:
        raise ModelNotFound("the embedded model is not installed; install it with: pip ...")


def test_failed_warmup_raises_the_classifiers_own_error() -> None:
    app = create_app(_NoModel())
    with pytest.raises(ModelNotFound, match="install it with"):
        serve(app, "127.0.0.1", 0, log_level="critical")
