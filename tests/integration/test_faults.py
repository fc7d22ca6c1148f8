"""Faults: processes killed mid-phase, endpoints dying mid-phase, damaged artifacts. Nothing
completed may be lost, and the resumed run must end exactly where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pld.cache import Cache
from pld.config import DistillConfig
from pld.distiller import Distiller
from pld.errors import BackendUnavailable, RunDirError
from pld.models.client import Accountant
from pld.models.fake import HashEmbedder, ScriptedChatModel
from pld.run import Run
from pld.rundir import FILES
from pld.tasks.base import stratified_split
from tests.conftest import ROOT
from tests.fakes import SCRIPTED_CFG as CFG
from tests.fakes import make_student, make_task, make_teacher

pytestmark = pytest.mark.integration
# every artifact but the ledger (timings, usage) and the predictions (compared separately)
ARTIFACTS = tuple(f for f in FILES if f not in ("run.json", "usage.json", "predictions_val.jsonl"))


def _worker(
    run: Path, cache: Path, resume: bool = False, slow: bool = False
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.fault_worker", str(run), str(cache)]
    return subprocess.Popen(
        args + (["--resume"] if resume else []) + (["--slow"] if slow else []),
        cwd=ROOT,
        # this checkout's pld, whichever one the virtualenv has installed
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
    )


def _stop(p: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the worker and reap it. SIGINT is handled between Python bytecodes, so a worker
    inside native code (model load, a llama.cpp call) on a loaded 2-core machine can take well
    over 30 s to act on it; the wait is a backstop, and a worker that never exits is killed
    (no orphan left to break later tests) and reported."""
    os.kill(p.pid, sig)
    try:
        p.wait(180)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(30)
        raise AssertionError(f"the worker ignored {sig.name} for 180 s") from None


def _phases(run: Path) -> set[str]:
    try:
        return set(json.loads((run / "run.json").read_text())["phases"])
    except (OSError, ValueError, KeyError):
        return set()


def _normalised(run: Path) -> dict[str, str]:
    out = {name: (run / name).read_text() for name in ARTIFACTS}
    preds = [json.loads(x) for x in (run / "predictions_val.jsonl").read_text().splitlines()]
    for p in preds:  # whether an answer came from the cache is expected to differ
        p.pop("cached")
    out["predictions_val.jsonl"] = json.dumps(preds)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("ref")
    p = _worker(d / "run", d / "cache.sqlite")
    assert p.wait(120) == 0
    return _normalised(d / "run")


@pytest.mark.parametrize("phase", ["extract", "synthesize", "resolve", "finalize", "decide"])
def test_kill_9_then_resume_gives_identical_artifacts(
    tmp_path: Path, reference: dict[str, str], phase: str
) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    before = {
        "extract": set(),
        "synthesize": {"extract"},
        "resolve": {"extract", "synthesize"},
        "finalize": {"extract", "synthesize", "resolve"},
        "decide": {"extract", "synthesize", "resolve", "finalize"},
    }[phase]
    p = _worker(run, cache)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        done = _phases(run)
        started = phase != "extract" or (
            cache.exists() and Cache(cache).stats()["completions"] >= 3
        )
        if before <= done and phase not in done and started:
            break
        time.sleep(0.005)
    killed = p.poll() is None
    if killed:
        os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    last = ("finalize", "decide")  # short stages: the run may end before the kill lands
    assert killed or phase in last, "the run finished before it could be killed"
    if killed:
        assert phase not in _phases(run) or phase in last
    n_cached = Cache(cache).stats()["completions"]
    r = _worker(run, cache, resume=True)
    assert r.wait(120) == 0
    assert _normalised(run) == reference
    meta = json.loads((run / "run.json").read_text())
    # the resumed process re-paid none of the calls completed before the kill
    calls = sum(s["calls"] for s in meta["usage_by_role"].values())
    assert calls <= Cache(cache).stats()["completions"] - n_cached + 1


def test_endpoint_down_mid_phase_then_resume_repeats_nothing(tmp_path: Path) -> None:
    task = make_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    train, val = task.with_examples(sp.train), task.with_examples(sp.val)
    cfg = DistillConfig(
        min_samples=3, eps=0.3, max_rounds=1, max_retries=2, teacher_concurrency=1, calibrate=False
    )
    healthy = make_teacher()
    calls = {"n": 0}

    def flaky(m, o):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 6:
            return BackendUnavailable("connection refused")
        return healthy._script(m, o)  # type: ignore[operator]

    cache = Cache(tmp_path / "c.sqlite")
    with pytest.raises(BackendUnavailable, match="gave up after 3 attempts"):
        Distiller(
            ScriptedChatModel(flaky, name="teacher"),
            make_student(),
            HashEmbedder(),
            config=cfg,
            cache=cache,
        ).fit(train, val, run_dir=tmp_path / "run")
    done_before = cache.stats()["completions"]
    assert done_before >= 6
    teacher2 = make_teacher()
    d = Distiller(teacher2, make_student(), HashEmbedder(), config=cfg, cache=cache).fit(
        train, val, run_dir=tmp_path / "run", resume=True
    )
    extraction = [
        r
        for r in teacher2.requests
        if "The correct label for this input is" in r.messages[1].content
    ]
    assert len(extraction) == len(train.examples) - 6  # only the ones never completed
    assert d.instructions_.labels_covered() == set(task.labels)


def test_damaged_artifact_is_reported_and_rebuilt_from_cache(tmp_path: Path) -> None:
    task = make_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    train, val = task.with_examples(sp.train), task.with_examples(sp.val)
    cfg = DistillConfig(min_samples=3, eps=0.3, max_rounds=1, calibrate=False)
    cache = Cache(tmp_path / "c.sqlite")
    Distiller(make_teacher(), make_student(), HashEmbedder(), config=cfg, cache=cache).fit(
        train, val, run_dir=tmp_path / "run"
    )
    good = (tmp_path / "run" / "clusters.json").read_text()
    (tmp_path / "run" / "clusters.json").write_text(good[: len(good) // 2])  # half-written
    (tmp_path / "run" / ".rules.jsonl.abc.tmp").write_text("{partial")  # stale temp file
    teacher = make_teacher()
    d = Distiller(teacher, make_student(), HashEmbedder(), config=cfg, cache=cache).fit(
        train, val, run_dir=tmp_path / "run", resume=True
    )
    assert d.damaged_artifacts_ == ["clusters.json"]
    assert (tmp_path / "run" / "clusters.json").read_text() == good
    assert teacher.requests == []  # rebuilt entirely from the cache
    assert not (tmp_path / "run" / ".rules.jsonl.abc.tmp").exists()


def _wait_until(cond: Callable[[], bool], p: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not cond():
        assert p.poll() is None, "the worker ended before the test could act"
        assert time.monotonic() < deadline, "the worker never got there"
        time.sleep(0.01)


def test_live_run_is_locked_and_a_killed_ones_lock_never_blocks(tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    p = _worker(run, cache, slow=True)
    try:
        _wait_until(lambda: (run / "run.json").exists(), p)
        for kw in ({"resume": True}, {"force": True}):  # --resume twice; --force on a live run
            with pytest.raises(
                RunDirError, match=rf"in use by another pld process \(PID {p.pid}\)"
            ):
                Run(run, Accountant(), **kw)
        assert (run / "run.json").exists()  # --force deleted nothing
        assert p.poll() is None
    finally:
        _stop(p, signal.SIGKILL)
    # the dead holder's PID is still in the lock file, but the kernel released its lock
    assert (run / ".pld.lock").read_text().strip() == str(p.pid)
    r = _worker(run, cache, resume=True)
    assert r.wait(120) == 0
    assert set(json.loads((run / "run.json").read_text())["phases"]) == {
        "extract",
        "synthesize",
        "resolve",
        "finalize",
        "decide",
        "lint",
    }


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_usage_of_a_killed_process_is_kept(tmp_path: Path, sig: signal.Signals) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    p = _worker(run, cache, slow=True)
    try:
        _wait_until(lambda: cache.exists() and Cache(cache).stats()["completions"] >= 3, p)
    finally:
        _stop(p, sig)
    cached = Cache(cache).stats()["completions"]  # extraction only: one entry per call
    assert _worker(run, cache, resume=True).wait(120) == 0
    earlier = json.loads((run / "run.json").read_text())["usage_earlier_processes"]
    calls = earlier[-1]["usage_by_role"]["teacher"]["calls"]
    # every answer in the cache was paid for, and at most the calls in flight were not cached
    assert cached <= calls <= cached + CFG.teacher_concurrency
