"""Shared e2e fixtures: one real distillation per session, reused by the CLI and report
tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PLD = [sys.executable, "-m", "pld.cli"]


def pld(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    r = subprocess.run([*PLD, *args], capture_output=True, text=True, env=e, timeout=900)
    if check and r.returncode != 0:
        raise AssertionError(f"pld {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def run_dir(workdir: Path) -> Iterator[Path]:
    env = {"PLD_CACHE": str(workdir / "cache.sqlite")}
    out = workdir / "run"
    # SmolLM2 writes ~15 tokens/s here: the teacher's reply lengths decide this fixture's time
    cfg = workdir / "e2e.toml"
    cfg.write_text(
        "extract_max_tokens = 160\nconsolidate_max_tokens = 160\nresolve_max_tokens = 200\n"
        "resolve_train_sample = 8\n"
    )
    r = pld(
        "distill",
        "--task",
        "demo",
        "--teacher",
        "local:smollm2",
        "--student",
        "local:smollm2",
        "--out",
        str(out),
        "--max-train",
        "8",
        "--max-rounds",
        "1",
        "--split",
        "0.5,0.16,0.34",  # 16 validation tickets: every stage runs, in CI's time budget
        "--config",
        str(cfg),
        env=env,
    )
    assert "pld distill" in r.stdout and "rulebook" in r.stdout
    yield out
