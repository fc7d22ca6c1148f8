"""The run directory: every phase writes its artifact here before the next phase starts,
atomically (temp file + fsync + rename), so a crash never leaves a half-written artifact and a
resumed run starts at the first missing one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pld.errors import RunDirError

FILES = (
    "run.json",
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
)


def atomic_write(path: Path, data: str) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class RunDir:
    """Atomic file access to one run directory. Opening it checks the directory is usable for
    what is asked: a new run (empty, or ``force``), a resumed one (has run.json), or reading
    only (``read_only``: nothing is written, not even a probe)."""

    def __init__(
        self,
        path: str | Path,
        *,
        resume: bool = False,
        force: bool = False,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        if read_only:
            if not (self.path / "run.json").is_file():
                raise RunDirError(
                    f"{self.path} holds no run to resume or read (no run.json); start one with "
                    "pld distill --out DIR"
                )
            return
        if resume and force:
            raise RunDirError("--resume and --force contradict each other; choose one")
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory; choose another --out")
        if resume:
            if not (self.path / "run.json").exists():
                raise RunDirError(
                    f"{self.path} holds no run to resume (no run.json); start one with --out"
                )
        elif self.path.exists() and any(self.path.iterdir()):
            if not force:
                raise RunDirError(
                    f"{self.path} is not empty; pass --resume to continue that run or --force "
                    "to overwrite it"
                )
            for name in FILES:
                (self.path / name).unlink(missing_ok=True)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"cannot write to {self.path}: {e.strerror or e}") from e
        for stale in self.path.glob(".*.tmp"):  # leftovers of an interrupted atomic write
            stale.unlink(missing_ok=True)

    def file(self, name: str) -> Path:
        """The path of artifact ``name`` (which need not exist)."""
        return self.path / name

    def exists(self, name: str) -> bool:
        """Whether artifact ``name`` is on disk."""
        return self.file(name).exists()

    def write_text(self, name: str, text: str) -> None:
        """Write ``text`` exactly (no newline translation), atomically."""
        atomic_write(self.file(name), text)

    def write_json(self, name: str, obj: Any) -> None:
        """Write indented UTF-8 JSON, atomically."""
        atomic_write(self.file(name), json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    def write_jsonl(self, name: str, rows: Iterable[Any]) -> None:
        """Write one JSON object per line, atomically."""
        atomic_write(
            self.file(name),
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
        )

    def read_text(self, name: str) -> str:
        """An artifact's exact text (no newline translation: prompts are sent byte for byte)."""
        p = self.file(name)
        try:
            with p.open(encoding="utf-8", newline="") as f:
                return f.read()
        except (OSError, ValueError) as e:
            raise RunDirError(f"{p} is unreadable ({e}); rerun with --resume to rebuild it") from e

    def read_json(self, name: str) -> Any:
        """Read a JSON artifact; a damaged one is a RunDirError naming the fix."""
        p = self.file(name)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RunDirError(
                f"{p} is unreadable or damaged ({e}); delete it and rerun with --resume to "
                "rebuild it from the cache"
            ) from e

    def read_jsonl(self, name: str) -> list[Any]:
        """Read a JSONL artifact; a damaged one is a RunDirError naming the fix."""
        p = self.file(name)
        try:
            return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
        except (OSError, ValueError) as e:
            raise RunDirError(
                f"{p} is unreadable or damaged ({e}); delete it and rerun with --resume"
            ) from e
