"""Teacher batch mode at the level of a run directory: put a fit's teacher in batch mode, turn
a deferral into the "batch pending" stop, and import a results file into a run.

``pld.batch`` knows request files, results files and the cache; this module adds what only a
run knows — its ``run_id``, its teacher's identity, its cache and its ledger — so that
``pld teacher import RUN_DIR FILE`` needs nothing but the run directory, and the teacher usage
a batch reports ends up in run.json like the usage of live calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pld.batch import BatchCollector, BatchDir, ImportReport, import_results
from pld.cache import Cache
from pld.errors import ConfigError, TeacherBatchPending
from pld.models.client import ChatClient, Price
from pld.run import LEDGER, Run, previous_ledger
from pld.rundir import RunDir

# A batch-mode teacher never sends a request (every miss is deferred), so an ``openai:``
# spec needs no API key there; this placeholder stands in for one and is never used.
BATCH_ONLY_KEY = "pld-batch-mode-sends-nothing"
LEDGER_KEY = "teacher_batch"


def attach(teacher: ChatClient, run: Run, batch_dir: str | Path) -> BatchCollector:
    """Put ``teacher`` in batch mode for ``run`` and record the batch folder (and the usage
    of the replies imported so far) in the ledger."""
    if run.path is None:
        raise ConfigError("teacher batch mode needs a run directory (run_dir=... / --out DIR)")
    folder = Path(batch_dir).resolve()
    collector = BatchCollector.attach(teacher, folder, run_id=str(run.state["run_id"]))
    run.state[LEDGER_KEY] = {"dir": str(folder), "usage": BatchDir(folder).usage()}
    run.save()
    return collector


def pending(run: Run, collector: BatchCollector, *, model_hint: str) -> TeacherBatchPending:
    """Write the phase's deferred requests, note them in the ledger and return the stop
    that names the next commands (the caller raises it)."""
    phase = run.accountant.phase
    bf = collector.flush(phase)
    run.state.setdefault(LEDGER_KEY, {})["pending"] = {
        "phase": phase,
        "requests_file": str(bf.path),
        "requests": bf.n_requests,
    }
    run.save()
    assert run.path is not None  # attach() refused a run without a directory
    return TeacherBatchPending(
        bf.next_steps(run.path, model_hint=model_hint), phase=phase, requests_file=str(bf.path)
    )


def batch_dir_of(ledger: dict[str, Any], run_dir: str | Path) -> Path:
    """The batch folder a run was started with, or a ConfigError saying there is none."""
    folder = (ledger.get(LEDGER_KEY) or {}).get("dir")
    if not folder:
        raise ConfigError(
            f"{run_dir} was not started in teacher batch mode (no --teacher-batch); there is "
            "nothing to import into"
        )
    return Path(folder)


def import_into_run(
    run_dir: str | Path,
    results: Sequence[str | Path],
    *,
    partial: bool = False,
    cache: Cache | None = None,
    price: Price | None = None,
) -> ImportReport:
    """Import batch results into the run in ``run_dir``: its run_id and teacher identity
    guard against a file meant for another run, its cache receives the replies, and the
    usage the results report is written to its ledger. Raises ``BatchImportError`` (nothing
    imported) when any line is bad, unless ``partial``."""
    ledger = previous_ledger(run_dir)
    folder = batch_dir_of(ledger, run_dir)
    if cache is None:
        if not ledger.get("cache"):
            raise ConfigError(f"{run_dir} has no cache recorded in its {LEDGER}; pass --cache")
        cache = Cache(ledger["cache"])
    report = import_results(
        folder,
        results,
        cache,
        run_id=ledger.get("run_id"),
        model_identity=(ledger.get("models") or {}).get("teacher"),
        price=price,
        partial=partial,
    )
    entry = ledger.setdefault(LEDGER_KEY, {})
    entry["usage"] = BatchDir(folder).usage()
    entry["still_pending"] = report.pending
    RunDir(run_dir, resume=True).write_json(LEDGER, ledger)
    return report
