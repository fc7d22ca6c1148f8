"""``Run``: the one owner of a run directory while it is being fitted.

It keeps the run.json ledger (what was asked, which stages are done, what they cost), checks
on resume that the directory belongs to the same data and settings, carries the usage of
earlier processes forward, and runs each stage as "artifact present → load, else produce and
write" so a resumed fit starts at the first missing artifact and re-pays nothing.

Everything that writes run.json goes through ``Run.save``; the directory is opened in
``Run.__init__`` and released in ``Run.close``. Those are the two places for an OS lock on the
directory and for persisting usage after every call.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pld.config import DistillConfig
from pld.errors import ConfigError, RunDirError
from pld.models.client import Accountant
from pld.rundir import RunDir

log = logging.getLogger(__name__)
T = TypeVar("T")
LEDGER = "run.json"


def previous_ledger(path: str | Path) -> dict[str, Any]:
    """The ledger of an existing run (what ``pld distill --resume`` continues from)."""
    ledger: dict[str, Any] = RunDir(path, read_only=True).read_json(LEDGER)
    return ledger


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
        self.dir = RunDir(path, resume=resume, force=force) if path is not None else None
        self.accountant = accountant
        self.resume = resume
        self.state: dict[str, Any] = {}
        self.damaged: list[str] = []

    @property
    def path(self) -> Path | None:
        """The run directory, or None for a fit kept in memory."""
        return self.dir.path if self.dir is not None else None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the directory (nothing to release yet: the place for an OS lock)."""

    def begin(self, state: dict[str, Any]) -> None:
        """Start the ledger with ``state`` (task, models, config, split ids, caller's meta). On
        resume the earlier ledger must describe the same data and outcome settings; its done
        stages are kept and its usage is carried forward, never lost. ``run_id`` is drawn
        on the first start and kept on resume (teacher batch files are tied to it)."""
        self.state = state
        state.setdefault("run_id", uuid.uuid4().hex)
        if self.dir is not None and self.resume:
            prev = self.dir.read_json(LEDGER)
            self._check_identity(prev)
            state["run_id"] = prev.get("run_id", state["run_id"])
            state["phases"] = {
                k: v for k, v in prev.get("phases", {}).items() if v.get("status") == "done"
            }
            # usage_by_role covers this process; earlier processes' usage is kept, not lost
            state["usage_earlier_processes"] = [
                *prev.get("usage_earlier_processes", []),
                {
                    "usage_by_role": prev.get("usage_by_role", {}),
                    "usage_by_phase": prev.get("usage_by_phase", {}),
                },
            ]
        self.save()

    def _check_identity(self, prev: Mapping[str, Any]) -> None:
        prev_cfg = DistillConfig.from_dict(prev.get("config", {})).outcome_settings()
        cfg = DistillConfig.from_dict(self.state.get("config", {})).outcome_settings()
        if prev.get("train_ids") != self.state.get("train_ids") or prev_cfg != cfg:
            raise ConfigError(
                f"{self.path} was started with different data or settings; resume it with "
                "the same task, split and config, or start a new --out"
            )

    def save(self) -> None:
        """Write the ledger with the usage so far (the one writer of run.json)."""
        self.state["usage_by_role"] = self.accountant.by_role()
        self.state["usage_by_phase"] = self.accountant.by_phase()
        if self.dir is not None:
            self.dir.write_json(LEDGER, self.state)

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
            return load(self.dir)
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
