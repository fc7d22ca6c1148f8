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
from typing import Any

import pytest
from click.testing import CliRunner

from pld.batch import EXIT_BATCH_PENDING
from pld.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]  # slow under shared CPU load

SPEC = "local:smollm2?cache_prompt=off"
COMMON = ("--task", "demo", "--student", SPEC, "--teacher", SPEC)
# Kept small for 2 CPU cores: four training examples (one per label; SmolLM2 writes a valid
# rule for at least one of them at the first attempt), one attempt each, short replies, one
# resolve round and a small validation split. The decide stage asks the teacher nothing, so it
# is outside what this test compares; off, it saves two runs' worth of uncached student passes
# (cache_prompt=off prefills every prompt in full); one resolve candidate per round suffices to
# put a resolve batch through the cycle.
SMALL = ("--max-train", "4", "--max-rounds", "1", "--split", "0.5,0.08,0.42")
CONFIG = """extract_max_attempts = 1
extract_max_tokens = 160
consolidate_max_tokens = 160
resolve_max_tokens = 200
resolve_train_sample = 4
resolve_candidates = 1
decide = false
"""


def pld(*args: str, code: int = 0) -> Any:
    """Run a pld command in this process (the engine stays loaded between commands)."""
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == code, f"pld {' '.join(args)} -> {r.exit_code}:\n{r.output}"
    return r


def test_distill_export_run_import_resume_equals_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "small.toml"
    cfg.write_text(CONFIG)
    opts = (*COMMON, *SMALL, "--config", str(cfg))
    monkeypatch.setenv("PLD_CACHE", str(tmp_path / "live.sqlite"))
    pld("distill", *opts, "--out", str(tmp_path / "live"))

    monkeypatch.setenv("PLD_CACHE", str(tmp_path / "batch.sqlite"))
    run, batch = tmp_path / "run", tmp_path / "batch"
    r = CliRunner().invoke(
        main, ["distill", *opts, "--out", str(run), "--teacher-batch", str(batch)]
    )
    phases: list[str] = []
    asked = 0
    while r.exit_code == EXIT_BATCH_PENDING:
        assert "pld teacher import" in r.output and len(phases) < 8, r.output
        pending = json.loads((run / "run.json").read_text())["teacher_batch"]["pending"]
        phases.append(pending["phase"])
        n = pending["requests"]
        asked += n
        results = tmp_path / f"results-{len(phases)}.jsonl"
        ran = pld(
            "teacher", "run", pending["requests_file"], "--model", SPEC, "--out", str(results)
        )
        assert f"answered {n} of {n}" in ran.output
        imp = pld("teacher", "import", str(run), str(results))
        assert f"imported {n} teacher replies" in imp.output
        r = CliRunner().invoke(main, ["distill", "--resume", str(run)])
    assert r.exit_code == 0, r.output
    assert phases[:2] == ["extract", "synthesize"], phases
    assert (run / "system_prompt.txt").read_bytes() == (
        tmp_path / "live" / "system_prompt.txt"
    ).read_bytes()
    ledger = json.loads((run / "run.json").read_text())
    assert ledger["teacher_batch"]["usage"]["replies"] == asked
    assert ledger["teacher_batch"]["usage"]["completion_tokens"] > 0
    assert "pending" not in ledger["teacher_batch"]  # a finished run waits for nothing
