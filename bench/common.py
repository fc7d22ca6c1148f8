"""Shared helpers for the benchmarks: machine facts, shared-data paths, result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from pld.rundir import atomic_write

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PLD_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import xllamacpp

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "xllamacpp": getattr(xllamacpp, "__version__", "?"),
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }


def write_json(path: Path, obj: Any, *, indent: int = 2) -> None:
    """Every results file bench writes goes through pld's own atomic write: a benchmark killed
    mid-save (they run for hours and get paused) leaves the previous file whole, and the
    temporary name is unique, so two writers never share one ``.tmp``."""
    atomic_write(path, json.dumps(obj, indent=indent) + "\n")


def save(name: str, obj: Any) -> Path:
    p = RESULTS / f"{name}.json"
    write_json(p, obj)
    return p


def pct(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(xs, q)) if xs else float("nan")


def stop_process(proc: subprocess.Popen[str], grace_s: float = 60.0) -> int | None:
    """SIGTERM, then SIGKILL after ``grace_s``: a llama.cpp server finishes its in-flight
    request before it exits, which at nice 19 on a long prompt can take minutes, and a
    benchmark that gives up waiting must not leave it running, orphaned."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode
