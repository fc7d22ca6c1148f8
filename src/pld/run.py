"""``Run``: the one owner of a run directory while it is being fitted.

It keeps the run.json ledger (what was asked, which stages are done, what they cost), checks
on resume that the directory belongs to the same data and settings, carries the usage of
earlier processes forward, and runs each stage as "artifact present → load, else produce and
write" so a resumed fit starts at the first missing artifact and re-pays nothing.

Everything that writes run.json goes through ``Run.save``; the directory is opened and locked
(one process per run directory) in ``Run.__init__`` and released in ``Run.close``.

Usage is persisted as calls complete, so no interruption loses it. After every call that was
sent — before its answer reaches the cache, so the usage on disk never counts fewer calls
than the cache holds — this process's usage is written to ``usage.json``: a few hundred bytes,
replaced atomically without fsync (the cache's own durability: it survives the process being
killed). run.json itself (which holds the split ids, and is fsynced) is rewritten at most every
``SAVE_INTERVAL_S`` as calls complete, after every stage, and at close whatever ended the run
(a budget stop, Ctrl-C, an error). A resumed run takes the earlier usage from whichever of the
two was written last (``usage_seq``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pld.config import DistillConfig
from pld.errors import ConfigError, DataError, RunDirError
from pld.models.client import Accountant
from pld.rundir import RunDir

log = logging.getLogger(__name__)
T = TypeVar("T")
LEDGER = "run.json"
LIVE_USAGE = "usage.json"
# run.json can be large (it lists the split's ids) and is fsynced: rewritten for usage at most
# this often; cache hits (free, thousands a second on resume) reach usage.json as often
SAVE_INTERVAL_S = 2.0


def previous_ledger(path: str | Path) -> dict[str, Any]:
    """The ledger of an existing run (what ``pld distill --resume`` continues from)."""
    return RunDir(path, read_only=True).read_ledger()


def whole_run_usage(ledger: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Usage by role over every process that worked on the run (the earlier ones a resume
    carried forward, and the last): what the run cost in all."""
    total: dict[str, dict[str, Any]] = {}
    parts = [*ledger.get("usage_earlier_processes", []), ledger]
    for part in parts:
        for role, stats in (part.get("usage_by_role") or {}).items():
            into = total.setdefault(role, {})
            for k, v in stats.items():
                if isinstance(v, (int, float)):
                    into[k] = into.get(k, 0) + v
                elif isinstance(v, dict):  # errors by type
                    errs = into.setdefault(k, {})
                    for name, n in v.items():
                        errs[name] = errs.get(name, 0) + n
    return dict(sorted(total.items()))


class Run:
    """A fit's run directory (or, with ``path=None``, the same bookkeeping in memory)."""

    def __init__(
        self,
        path: str | Path | None,
        accountant: Accountant,
        *,
        resume: bool = False,
        force: bool = False,
    ) -> None:
        # locked before anything in it is written or deleted: one process per run directory
        self.dir = RunDir(path, resume=resume, force=force, lock=True) if path is not None else None
        self.accountant = accountant
        self.resume = resume
        self.state: dict[str, Any] = {}
        self.damaged: list[str] = []
        self._begun = False
        self._saving = threading.Lock()
        self._last_save = self._last_live = 0.0
        self._seq = 0  # orders usage writes across run.json, usage.json and processes

    @property
    def path(self) -> Path | None:
        """The run directory, or None for a fit kept in memory."""
        return self.dir.path if self.dir is not None else None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(failed=exc[0] is not None)

    def close(self, *, failed: bool = False) -> None:
        """Save the usage however the run ended, then release the directory's lock. When
        the run is already failing, a failed save is logged rather than hiding its cause."""
        try:
            if self._begun:
                self.accountant.unsubscribe(self._on_usage)
                try:
                    self.save()
                except OSError as e:
                    if not failed:
                        raise
                    log.warning("could not save the usage to %s: %s", LEDGER, e)
        finally:
            if self.dir is not None:
                self.dir.close()

    def begin(self, state: dict[str, Any]) -> None:
        """Start the ledger with ``state`` (task, models, config, split ids, caller's meta). On
        resume the earlier ledger must describe the same data and outcome settings; its done
        stages are kept and its usage is carried forward, never lost. ``run_id`` is drawn
        on the first start and kept on resume (teacher batch files are tied to it)."""
        self.state = state
        state.setdefault("run_id", uuid.uuid4().hex)
        if self.dir is not None and self.resume:
            prev = self.dir.read_ledger()
            if prev.get("edits"):
                raise ConfigError(
                    f"{self.path} holds a rulebook edited with pld edit, not a fit to resume; "
                    f"resume the original run ({prev['edits'][0].get('from')}) or start a new "
                    "--out"
                )
            self._check_identity(prev)
            state["run_id"] = prev.get("run_id", state["run_id"])
            state["phases"] = {
                k: v for k, v in prev.get("phases", {}).items() if v.get("status") == "done"
            }
            last = self._last_usage(prev)
            self._seq = int(last.get("usage_seq", 0))
            # usage_by_role covers this process; earlier processes' usage is kept, not lost
            state["usage_earlier_processes"] = [
                *prev.get("usage_earlier_processes", []),
                {
                    "usage_by_role": last.get("usage_by_role", {}),
                    "usage_by_phase": last.get("usage_by_phase", {}),
                },
            ]
        self.save()
        self._begun = True
        self.accountant.subscribe(self._on_usage)

    def _last_usage(self, prev: Mapping[str, Any]) -> Mapping[str, Any]:
        """The earlier process's usage: usage.json when it was written after run.json (the
        process was killed between two saves of run.json), else run.json's."""
        assert self.dir is not None
        try:
            live = self.dir.read_json(LIVE_USAGE) if self.dir.exists(LIVE_USAGE) else None
        except RunDirError as e:  # only a copy: run.json's usage is the fallback
            log.warning("%s; using the usage saved in %s", e, LEDGER)
            live = None
        if isinstance(live, dict) and live.get("usage_seq", 0) > prev.get("usage_seq", 0):
            return live
        return prev

    def _on_usage(self, billed: bool) -> None:
        """Persist the usage: usage.json after every call that was sent (cache hits: now and
        then), run.json now and then. A failed write here is logged, never raised: raising
        would lose the answer just paid for (the save at close reports it)."""
        now = time.monotonic()
        try:
            if now - self._last_save >= SAVE_INTERVAL_S:
                self.save()
            elif billed or now - self._last_live >= SAVE_INTERVAL_S:
                with self._saving:
                    self._write_live(self.accountant.by_role(), self.accountant.by_phase())
        except OSError as e:
            log.warning("could not save the usage in %s: %s", self.path, e)

    def _write_live(self, by_role: Any, by_phase: Any) -> None:
        """usage.json (under ``_saving``): this process's usage, numbered."""
        self._seq += 1
        self._last_live = time.monotonic()
        if self.dir is not None:
            live = {"usage_seq": self._seq, "usage_by_role": by_role, "usage_by_phase": by_phase}
            self.dir.write_json(LIVE_USAGE, live, durable=False)

    def _check_identity(self, prev: Mapping[str, Any]) -> None:
        prev_cfg = DistillConfig.from_dict(prev.get("config", {})).outcome_settings()
        cfg = DistillConfig.from_dict(self.state.get("config", {})).outcome_settings()
        if prev.get("train_ids") != self.state.get("train_ids") or prev_cfg != cfg:
            raise ConfigError(
                f"{self.path} was started with different data or settings; resume it with "
                "the same task, split and config, or start a new --out"
            )

    def save(self) -> None:
        """Write the ledger with the usage so far (the one writer of run.json). Serialised,
        so a save from another thread never overwrites a newer one with older totals."""
        with self._saving:
            by_role, by_phase = self.accountant.by_role(), self.accountant.by_phase()
            self._write_live(by_role, by_phase)
            self.state.update(usage_by_role=by_role, usage_by_phase=by_phase, usage_seq=self._seq)
            if self.dir is not None:
                self.dir.write_json(LEDGER, self.state)
            self._last_save = time.monotonic()

    def usage(self) -> dict[str, Any]:
        """This process's usage, by role and by stage."""
        return {"by_role": self.accountant.by_role(), "by_phase": self.accountant.by_phase()}

    def _have(self, name: str, files: Sequence[str]) -> bool:
        """A finished stage whose artifacts are all present and readable. A damaged one
        (half-written by an old version, edited by hand, truncated disk) is reported and the
        stage is recomputed — from the cache, so at no model cost."""
        if self.dir is None or not files or name not in self.state.get("phases", {}):
            return False
        for f in files:
            if not self.dir.exists(f):
                return False
            try:
                self.dir.read_jsonl(f) if f.endswith(".jsonl") else self.dir.read_json(f)
            except RunDirError as e:
                log.warning("%s; recomputing phase %s from the cache", e, name)
                self.damaged.append(f)
                return False
        return True

    async def stage(
        self,
        name: str,
        produce: Callable[[], Awaitable[T]],
        load: Callable[[RunDir], T] | None = None,
        *,
        files: Sequence[str] = (),
        save: Callable[[RunDir, T], None] | None = None,
        summary: Callable[[T], Mapping[str, Any]] | None = None,
    ) -> T:
        """Load stage ``name`` from its ``files`` when a finished run has them, else run
        ``produce``, write its artifacts with ``save`` and mark it done in the ledger with
        ``summary``. Usage is booked to the stage; a stage without files always runs."""
        self.accountant.phase = name
        if load is not None and self.dir is not None and self._have(name, files):
            try:
                return load(self.dir)
            except (RunDirError, KeyError, TypeError, ValueError, AttributeError, DataError) as e:
                # valid JSON of the wrong shape is as damaged as a truncated file
                log.warning(
                    "%s: %s is damaged (%s); recomputing it from the cache", self.path, name, e
                )
                self.damaged.extend(files)
        t0 = time.perf_counter()
        value = await produce()
        if self.dir is not None and save is not None:
            save(self.dir, value)
        self.state.setdefault("phases", {})[name] = {
            "status": "done",
            "wall_time_s": time.perf_counter() - t0,
            **(summary(value) if summary is not None else {}),
        }
        self.save()
        return value
