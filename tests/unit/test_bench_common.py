"""bench.common's process handling: a benchmark that stops a server must not leave it running."""

from __future__ import annotations

import subprocess
import sys

from bench.common import stop_process

# ignores SIGTERM, as a llama.cpp server busy with a long prompt effectively does
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(120)"
)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    assert stop_process(proc, grace_s=0.5) == -9  # SIGKILL: it was still running
    assert proc.poll() is not None and proc.stdout.closed


def test_a_process_that_honours_sigterm_exits_by_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], text=True)
    assert stop_process(proc) == -15
    assert stop_process(proc) == -15  # stopping a stopped process is a no-op
