"""Volume prediction against an OpenAI-compatible server with several slots (a real llama.cpp
HTTP server on 127.0.0.1, as vLLM or SGLang would be on a GPU box): many requests in flight
give the labels one request at a time gives, through the library and through ``pld predict
--concurrency``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pld.models.client import ChatClient, Limits
from pld.models.openai_compat import OpenAIChatModel
from pld.rulebook import Rulebook
from pld.tasks.base import stratified_sample
from pld.tasks.files import load_task
from tests.conftest import ServerProcess
from tests.service_support import save_run_dir, support_rules

pytestmark = pytest.mark.integration

SLOTS = 4


@pytest.fixture(scope="module")
def slotted_server() -> Iterator[ServerProcess]:
    """llama.cpp serving SmolLM2 with 4 slots (each slot gets ctx/4 = 1024 tokens). One
    thread: on a shared 2-core machine llama.cpp's spinning worker threads slow every request
    several-fold when the cores are oversubscribed."""
    s = ServerProcess(["--slots", str(SLOTS), "--threads", "1"])
    yield s
    s.kill()


def test_concurrent_predict_gives_the_labels_of_one_at_a_time(
    slotted_server: ServerProcess, tmp_path: Path
) -> None:
    task = load_task("demo")
    rb = Rulebook.load(save_run_dir(tmp_path / "run", task, support_rules()))
    items = stratified_sample(task.examples, 8, seed=5)
    spec = f"openai:smollm2@{slotted_server.base_url}?dialect=llamacpp"

    def client(n: int) -> ChatClient:
        model = OpenAIChatModel("smollm2", base_url=slotted_server.base_url, dialect="llamacpp")
        return ChatClient(model, role="student", limits=Limits(max_concurrency=n))

    one, many = client(1), client(SLOTS)
    serial = rb.predict(items, one)
    parallel = rb.predict(items, many)
    assert one.max_in_flight == 1 and many.max_in_flight == SLOTS  # really in parallel
    assert [p.label for p in parallel] == [p.label for p in serial]
    assert all(p.label is not None for p in serial)

    # the same through the CLI flag (no cache: every item is a real request)
    inputs = tmp_path / "items.jsonl"
    inputs.write_text("".join(json.dumps({"id": e.id, **e.fields}) + "\n" for e in items))
    out = tmp_path / "preds.jsonl"
    cmd = [sys.executable, "-m", "pld", "predict", str(rb.origin), str(inputs), "--student"]
    r = subprocess.run(
        [*cmd, spec, "--concurrency", str(SLOTS), "--no-cache", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(p["id"], p["label"]) for p in got] == [(p.id, p.label) for p in serial]
