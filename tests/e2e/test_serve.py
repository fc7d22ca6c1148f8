"""``pld serve`` and ``pld engine serve`` as a user starts them: subprocesses on 127.0.0.1 with
an OS-chosen port. ``pld serve`` answers with the labels ``pld predict`` writes for the same
items and run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from pld.models.base import GenOptions, Message
from pld.models.openai_compat import OpenAIChatModel
from pld.tasks.base import stratified_sample
from pld.tasks.files import load_task
from tests.e2e.conftest import PLD, pld
from tests.service_support import save_run_dir, support_rules

pytestmark = pytest.mark.integration


@contextmanager
def listening(args: Sequence[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``pld ARGS``, wait for its ``LISTENING <url>`` line, stop it with SIGTERM after."""
    proc = subprocess.Popen(
        [*PLD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("LISTENING http://127.0.0.1:"):
            proc.kill()
            raise AssertionError(f"pld {args[0]} did not start: {line!r} {proc.stderr.read()}")
        yield line.split(" ", 1)[1]
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises SIGTERM once it has shut down gracefully, so -SIGTERM is a clean
        # stop too; a traceback is not
        assert proc.wait(timeout=120) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()


def test_pld_serve_answers_with_the_labels_of_pld_predict(tmp_path: Path) -> None:
    task = load_task("demo")
    run = save_run_dir(tmp_path / "run", task, support_rules())
    items = stratified_sample(task.examples, 6, seed=11)
    inputs = tmp_path / "items.jsonl"
    inputs.write_text("".join(json.dumps({"id": e.id, **e.fields}) + "\n" for e in items))
    out = tmp_path / "preds.jsonl"
    pld(
        "predict",
        str(run),
        str(inputs),
        "--student",
        "local:smollm2",
        "--no-cache",
        "--out",
        str(out),
    )
    expected = [json.loads(x) for x in out.read_text().splitlines()]

    args = ["serve", str(run), "--student", "local:smollm2", "--port", "0", "--max-batch", "3"]
    with (
        listening([*args, "--token-env", "MY_TOKEN"], {"MY_TOKEN": "s3cret"}) as url,
        httpx.Client(base_url=url, timeout=300) as c,
    ):
        assert c.post("/v1/classify", json={"input": {"text": "x"}}).status_code == 401
        c.headers["Authorization"] = "Bearer s3cret"
        r = c.post("/v1/classify", json={"inputs": [{"id": e.id, **e.fields} for e in items]})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        info = c.get("/v1/rulebook").json()
    assert [(x["id"], x["label"]) for x in got] == [(p["id"], p["label"]) for p in expected]
    for x, p in zip(got, expected, strict=True):
        assert x["confidence"] == pytest.approx(p["confidence"], rel=1e-6)
    assert info["system_prompt"] == (run / "system_prompt.txt").read_text()


def test_pld_serve_refuses_a_token_variable_that_is_not_set(tmp_path: Path) -> None:
    run = save_run_dir(tmp_path / "run", load_task("demo"), support_rules())
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_TOKEN_VAR"}
    r = subprocess.run(
        [*PLD, "serve", str(run), "--student", "local:smollm2", "--token-env", "NO_SUCH_TOKEN_VAR"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2
    assert "NO_SUCH_TOKEN_VAR is unset or empty" in r.stderr and "Traceback" not in r.stderr


def test_pld_engine_serve_is_an_openai_compatible_server() -> None:
    import asyncio

    with listening(["engine", "serve", "smollm2", "--port", "0", "--ctx", "2048"]) as url:
        assert url.endswith("/v1")
        model = OpenAIChatModel("smollm2", base_url=url, dialect="llamacpp")
        opts = GenOptions(max_tokens=4, choices=("yes", "no"))
        comp = asyncio.run(model.complete([Message("user", "Is the sky blue?")], opts))
    assert comp.text.strip() in ("yes", "no")
