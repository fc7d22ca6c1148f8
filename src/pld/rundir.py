"""The run directory: every phase writes its artifact here before the next phase starts,
atomically (temp file + fsync + rename), so a crash never leaves a half-written artifact and a
resumed run starts at the first missing one."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pld.errors import PLDError, RunDirError

log = logging.getLogger(__name__)
T = TypeVar("T")

FILES = (
    "run.json",
    "usage.json",
    "rules.jsonl",
    "extraction_failures.jsonl",
    "clusters.json",
    "noise_rules.jsonl",
    "instructions_v0.json",
    "rounds.jsonl",
    "instructions.json",
    "system_prompt.txt",
    "user_template.txt",
    "prompt.md",
    "predictions_val.jsonl",
    "examples_train.jsonl",
    "calibration.json",
    "decision.json",
    "lint.json",
)
# Written by a fit only with some settings (synthesis_candidates > 1): cleared by --force with
# the rest, so a forced rerun without them leaves no stale record behind.
OPTIONAL = ("synthesis_candidates.json",)
# Written into a finished run by later commands (pld audit): not part of a fit, but pld's, so
# --force clears them with the fit's files (an audit of the old rulebook must not survive).
DERIVED = ("audit.json",)


def atomic_write(path: Path, data: str, *, durable: bool = True) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new content, never half.
    ``durable=False`` skips the fsync: still whole after the process is killed, and cheap
    enough to repeat after every model call, but not guaranteed through a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


LOCK_FILE = ".pld.lock"


def check_destination(path: Path, flag: str = "--out") -> None:
    """Refuse, before any work is done, an output file that could not be written at the end:
    a directory, a missing or unwritable parent, something other than a regular file. The
    probe is a real temporary file in the parent (permission bits alone lie for root and on
    read-only mounts)."""
    parent = path.parent
    if path.is_dir():
        raise RunDirError(f"{flag} {path} is a directory; give a file path")
    if path.exists() and not path.is_file():
        raise RunDirError(f"{flag} {path} is not a regular file; give a file path")
    if not parent.is_dir():
        raise RunDirError(
            f"{flag} {path}: directory {parent} does not exist; create it or choose another {flag}"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(
            f"{flag} {path}: cannot write to {parent} ({e.strerror or e}); choose another {flag}"
        ) from e


class DirLock:
    """One process per run directory: an exclusive ``flock`` on ``.pld.lock`` inside it,
    held until ``release``, with the holder's PID written in the file for the message a
    second process gets. The kernel drops the lock when its holder dies (even by kill -9), so
    a stale lock never blocks a resume; the file itself stays (unlinking it would let two
    processes lock two different files)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None
        path = directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot write to {directory}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"{directory} is in use by another pld process (PID {holder}); wait for it to "
                "finish or stop it, then rerun"
            ) from None
        except OSError as e:  # a filesystem without locks: work on, but say so
            log.warning("cannot lock %s (%s); make sure no other pld uses it", directory, e)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the next process in (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            os.close(fd)


class RunDir:
    """Atomic file access to one run directory. Opening it checks the directory is usable for
    what is asked: a new run (empty, or ``force``), a resumed one (has run.json), or reading
    only (``read_only``: nothing is written, not even a probe, and no lock is taken).

    With ``lock`` the directory is locked (``DirLock``) before anything in it is written or
    deleted, so ``--force`` or a second ``--resume`` can never touch a live run; ``close``
    releases it."""

    def __init__(
        self,
        path: str | Path,
        *,
        resume: bool = False,
        force: bool = False,
        read_only: bool = False,
        lock: bool = False,
    ) -> None:
        self.path = Path(path)
        self._lock: DirLock | None = None
        if read_only:
            if not (self.path / "run.json").is_file():
                raise RunDirError(
                    f"{self.path} holds no run to resume or read (no run.json); start one with "
                    "pld distill --out DIR"
                )
            return
        self._check_mode(resume=resume, force=force)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot write to {self.path}: {e.strerror or e}") from e
        if lock:
            self._lock = DirLock(self.path)
        try:
            self._prepare(resume=resume, force=force)
        except BaseException:
            self.close()
            raise

    def _check_mode(self, *, resume: bool, force: bool) -> None:
        if resume and force:
            raise RunDirError("--resume and --force contradict each other; choose one")
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory; choose another --out")
        if resume and not (self.path / "run.json").exists():
            raise RunDirError(
                f"{self.path} holds no run to resume (no run.json); start one with --out"
            )

    def _prepare(self, *, resume: bool, force: bool) -> None:
        """Empty a forced directory (pld's files only), probe that it is writable and drop
        leftovers of an interrupted atomic write."""
        if not resume and any(p.name != LOCK_FILE for p in self.path.iterdir()):
            if not force:
                raise RunDirError(
                    f"{self.path} is not empty; pass --resume to continue that run or --force "
                    "to overwrite it"
                )
            for name in (*FILES, *OPTIONAL, *DERIVED):
                (self.path / name).unlink(missing_ok=True)
        try:
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"cannot write to {self.path}: {e.strerror or e}") from e
        for stale in self.path.glob(".*.tmp"):  # leftovers of an interrupted atomic write
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the directory's lock, if this object holds one."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file(self, name: str) -> Path:
        """The path of artifact ``name`` (which need not exist)."""
        return self.path / name

    def exists(self, name: str) -> bool:
        """Whether artifact ``name`` is on disk."""
        return self.file(name).exists()

    def write_text(self, name: str, text: str) -> None:
        """Write ``text`` exactly (no newline translation), atomically."""
        atomic_write(self.file(name), text)

    def write_json(self, name: str, obj: Any, *, durable: bool = True) -> None:
        """Write indented UTF-8 JSON, atomically (see ``atomic_write`` for ``durable``)."""
        text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
        atomic_write(self.file(name), text, durable=durable)

    def write_jsonl(self, name: str, rows: Iterable[Any]) -> None:
        """Write one JSON object per line, atomically."""
        atomic_write(
            self.file(name),
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
        )

    def fix(self, name: str) -> str:
        """How to repair a damaged artifact ``name``, as a working command. Every artifact but
        the ledger is rebuilt from the cache by resuming; the ledger holds what a resume
        needs (the arguments, the split), so a damaged one means starting again — at no
        model cost, as every finished call is in the cache."""
        if name == "run.json":
            return (
                f"move it aside and start the run again with pld distill --out {self.path} "
                "--force and the run's arguments (finished calls come from the cache)"
            )
        if name == "audit.json":
            return f"rerun pld audit {self.path} to rebuild it (finished calls come from the cache)"
        return f"rerun pld distill --resume {self.path} to rebuild it from the cache"

    def _damaged(self, name: str, why: object) -> RunDirError:
        return RunDirError(f"{self.file(name)} is unreadable or damaged ({why}); {self.fix(name)}")

    def read_text(self, name: str) -> str:
        """An artifact's exact text (no newline translation: prompts are sent byte for byte)."""
        try:
            with self.file(name).open(encoding="utf-8", newline="") as f:
                return f.read()
        except (OSError, ValueError) as e:
            raise self._damaged(name, e) from e

    def read_json(self, name: str) -> Any:
        """Read a JSON artifact; a damaged one is a RunDirError naming the fix."""
        try:
            return json.loads(self.file(name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise self._damaged(name, e) from e

    def read_jsonl(self, name: str) -> list[Any]:
        """Read a JSONL artifact; a damaged one is a RunDirError naming the fix."""
        try:
            text = self.file(name).read_text(encoding="utf-8")
            return [json.loads(x) for x in text.splitlines() if x.strip()]
        except (OSError, ValueError) as e:
            raise self._damaged(name, e) from e

    def load(self, name: str, build: Callable[[Any], T]) -> T:
        """Read artifact ``name`` (JSON or JSONL by its extension) and ``build`` the object it
        holds. Valid JSON of the wrong shape (``{}`` for an instruction set, a row that is not
        an object) is as damaged as a truncated file: a RunDirError naming the file and the
        fix, never a KeyError or TypeError from deep inside a reader."""
        raw = self.read_jsonl(name) if name.endswith(".jsonl") else self.read_json(name)
        try:
            return build(raw)
        except (KeyError, TypeError, ValueError, AttributeError, PLDError) as e:
            why = f"missing {e}" if isinstance(e, KeyError) else e
            raise self._damaged(name, why) from e

    def read_ledger(self) -> dict[str, Any]:
        """run.json, checked to be a ledger: an object whose records are objects."""
        return self.load("run.json", ledger_shape)


def ledger_shape(d: Any) -> dict[str, Any]:
    """``d`` if it has a ledger's shape (what every reader of run.json relies on)."""
    if not isinstance(d, dict):
        raise TypeError(f"expected a JSON object, found {type(d).__name__}")
    for key in ("task", "config", "models", "phases", "cli"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise TypeError(f"'{key}' should be an object, found {type(d[key]).__name__}")
    return d


def rows_of_objects(rows: list[Any]) -> list[dict[str, Any]]:
    """A JSONL artifact's rows, each checked to be an object."""
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise TypeError(f"line {i} is not a JSON object")
    return rows
