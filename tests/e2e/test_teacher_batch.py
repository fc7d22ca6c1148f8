"""The whole teacher batch cycle on the command line with the embedded model:
``pld distill --teacher-batch`` (exit 75) → ``pld teacher run`` → ``pld teacher import`` →
``pld distill --resume``, repeated until it exits 0, writes byte for byte the rulebook a live
run with the same model and seed writes.

Both runs use ``local:smollm2?cache_prompt=off``: with llama.cpp's prompt cache on, a greedy
reply can depend on which request ran before it (see tests/integration/test_batch_local.py),
and the batch runner answers in file order while a live run asks in call order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pld.batch import EXIT_BATCH_PENDING
from tests.e2e.conftest import pld

pytestmark = pytest.mark.integration

SPEC = "local:smollm2?cache_prompt=off"
COMMON = ("--task", "demo", "--student", SPEC, "--teacher", SPEC)
SMALL = ("--max-train", "8", "--max-rounds", "1")


def test_distill_export_run_import_resume_equals_live(tmp_path: Path) -> None:
    live_env = {"PLD_CACHE": str(tmp_path / "live.sqlite")}
    pld("distill", *COMMON, *SMALL, "--out", str(tmp_path / "live"), env=live_env)

    env = {"PLD_CACHE": str(tmp_path / "batch.sqlite")}
    run, batch = tmp_path / "run", tmp_path / "batch"
    r = pld(
        "distill", *COMMON, *SMALL, "--out", str(run), "--teacher-batch", str(batch),
        env=env, check=False,
    )  # fmt: skip
    phases: list[str] = []
    while r.returncode == EXIT_BATCH_PENDING:
        assert "pld teacher import" in r.stdout and len(phases) < 8, r.stdout + r.stderr
        pending = json.loads((run / "run.json").read_text())["teacher_batch"]["pending"]
        phases.append(pending["phase"])
        results = tmp_path / f"results-{len(phases)}.jsonl"
        ran = pld(
            "teacher", "run", pending["requests_file"], "--model", SPEC, "--out", str(results)
        )
        assert f"answered {pending['requests']} of {pending['requests']}" in ran.stdout
        imp = pld("teacher", "import", str(run), str(results), env=env)
        assert f"imported {pending['requests']} teacher replies" in imp.stdout
        r = pld("distill", "--resume", str(run), env=env, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert phases[:2] == ["extract", "synthesize"], phases
    assert (run / "system_prompt.txt").read_bytes() == (
        tmp_path / "live" / "system_prompt.txt"
    ).read_bytes()
    ledger = json.loads((run / "run.json").read_text())
    assert ledger["teacher_batch"]["usage"]["completion_tokens"] > 0
    assert ledger["teacher_batch"]["still_pending"] == 0
