"""Batch mode's export side: record the teacher's cache misses, write them as a request file.

The batch folder holds, per export, ``requests-<phase>-<n>.jsonl`` (the OpenAI Batch input,
ready to upload) and ``requests-<phase>-<n>.manifest.json`` (run and model identity, the
requests file's SHA-256 and its cache keys). The manifest is written last and is the commit
point: a request file without one is an interrupted export and is simply overwritten.
``imports.jsonl`` logs every import (what landed, what failed, usage), so a later export knows
how often a request already went out and why it came back empty.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pld.batch.wire import BatchTarget, custom_id_for, dumps_line, input_line
from pld.errors import BackendResponseError, ConfigError, RunDirError, TeacherDeferred
from pld.models.base import GenOptions, Message, Usage
from pld.models.client import ChatClient
from pld.rundir import atomic_write

MANIFEST_FORMAT = "pld-teacher-batch/1"
IMPORT_LOG = "imports.jsonl"
_NAME_RE = re.compile(r"^requests-(?P<phase>[a-z0-9_]+)-(?P<n>[0-9]+)\.manifest\.json$")


def sha256_file(path: Path) -> str:
    """The manifest records the request file's digest so an import can refuse a file edited since
    export; read in 1 MiB chunks so a large batch never sits in memory whole."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """One export's commit record, as read back: an import trusts only the requests a manifest
    names, for the run and teacher it names."""

    path: Path
    run_id: str
    phase: str
    n: int
    model_identity: str
    target: BatchTarget
    requests_file: Path
    sha256: str
    keys: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Load a manifest written by ``flush``; a damaged or foreign one is a RunDirError naming
        how to recover, never a partial Manifest."""
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, expected {MANIFEST_FORMAT!r}")
            return cls(
                path=path,
                run_id=str(d["run_id"]),
                phase=str(d["phase"]),
                n=int(d["n"]),
                model_identity=str(d["model_identity"]),
                target=BatchTarget(str(d["target"]["model"]), str(d["target"]["dialect"])),
                requests_file=path.with_name(str(d["requests_file"])),
                sha256=str(d["sha256"]),
                keys=tuple(str(k) for k in d["keys"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunDirError(
                f"{path} is unreadable or damaged ({e}); restore it, or delete it together "
                "with its requests file and resume the run to export those requests again"
            ) from e


class BatchDir:
    """The folder of one run's batch exports and imports."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def manifests(self) -> list[Manifest]:
        """Every committed export, ordered by phase and number; a requests file without its
        manifest is an interrupted export and is not listed."""
        if not self.path.is_dir():
            return []
        found = [p for p in self.path.iterdir() if _NAME_RE.match(p.name)]
        return sorted((Manifest.read(p) for p in found), key=lambda m: (m.phase, m.n))

    def next_n(self, phase: str) -> int:
        """The number of ``phase``'s next export: one past the last, so none is overwritten."""
        return 1 + max((m.n for m in self.manifests() if m.phase == phase), default=0)

    def imports(self) -> list[dict[str, Any]]:
        """Every import recorded so far, oldest first: how often a request already went out, and
        how it came back, is read from here."""
        p = self.path / IMPORT_LOG
        if not p.exists():
            return []
        try:
            return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x]
        except (OSError, ValueError) as e:
            raise RunDirError(f"{p} is damaged ({e}); restore it or delete it") from e

    def last_errors(self) -> dict[str, str]:
        """custom_id → the latest error an import recorded for it."""
        out: dict[str, str] = {}
        for rec in self.imports():
            out.update(rec.get("errors", {}))
        return out

    def usage(self) -> dict[str, Any]:
        """The teacher usage and cost of every reply imported into this run (for run.json:
        a cache hit costs nothing live, so imported usage is counted here, once)."""
        u, cost, n = Usage(), 0.0, 0
        for rec in self.imports():
            u = u + Usage(**rec.get("usage", {}))
            cost += float(rec.get("cost_usd", 0.0))
            n += int(rec.get("imported", 0))
        return {
            "replies": n,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cached_prompt_tokens": u.cached_prompt_tokens,
            "cost_usd": cost,
        }


@dataclass(frozen=True)
class BatchFile:
    """One exported request file."""

    path: Path
    manifest: Path
    phase: str
    n: int
    n_requests: int
    reused: bool = False

    def next_steps(self, run_dir: str | Path, *, model_hint: str = "SPEC") -> str:
        """The message the CLI prints before exiting with ``TeacherBatchPending.exit_code``."""
        results = self.path.with_name(self.path.name.replace("requests-", "results-", 1))
        again = " (already exported; nothing new)" if self.reused else ""
        return (
            f"{self.n_requests} teacher requests of phase {self.phase} wait in "
            f"{self.path}{again}. Answer them with a provider's batch API (upload the file, "
            f"endpoint /v1/chat/completions) or locally: pld teacher run {self.path} "
            f"--model {model_hint} --out {results}; then: pld teacher import {run_dir} "
            f"{results} && pld distill --resume {run_dir}"
        )


class BatchCollector:
    """A ``ChatClient`` miss handler: records the request (once per cache key) and raises
    ``TeacherDeferred`` instead of calling. ``flush`` writes what it gathered."""

    def __init__(
        self,
        batch_dir: str | Path,
        *,
        run_id: str,
        model_identity: str,
        target: BatchTarget,
        max_exports: int = 3,
    ) -> None:
        if max_exports < 1:
            raise ConfigError("max_exports must be >= 1")
        self.dir = BatchDir(batch_dir)
        self.run_id = run_id
        self.model_identity = model_identity
        self.target = target
        self.max_exports = max_exports
        self.pending: dict[str, dict[str, Any]] = {}
        self._exports: dict[str, list[str]] = {}
        for m in self.dir.manifests():
            if m.run_id != run_id:
                raise RunDirError(
                    f"{m.path} belongs to run {m.run_id}, not {run_id}; give each run its "
                    "own --teacher-batch folder"
                )
            for k in m.keys:
                self._exports.setdefault(k, []).append(m.requests_file.name)

    @classmethod
    def attach(
        cls, client: ChatClient, batch_dir: str | Path, *, run_id: str, max_exports: int = 3
    ) -> BatchCollector:
        """Put ``client`` in batch mode. Batch mode needs the cache: imported replies live
        there, and a resumed run finds them by the same key."""
        if client.cache is None:
            raise ConfigError("teacher batch mode needs the cache; drop --no-cache")
        c = cls(
            batch_dir,
            run_id=run_id,
            model_identity=client.identity,
            target=BatchTarget.for_model(client.model),
            max_exports=max_exports,
        )
        client.on_miss = c
        return c

    def on_miss(self, key: str, messages: Sequence[Message], options: GenOptions) -> None:
        """Queue the missed request for the next export and defer the caller. A request that went
        out ``max_exports`` times without a reply is an error, so a run cannot loop forever."""
        cid = custom_id_for(key)
        went = self._exports.get(key, [])
        if len(went) >= self.max_exports:
            err = self.dir.last_errors().get(cid, "no result line was imported")
            raise BackendResponseError(
                f"teacher request {cid} went out in {len(went)} batches ({', '.join(went)}) "
                f"and never came back with a reply (last: {err}); check those batches' error "
                "files, fix the cause, and start a new run"
            )
        if key not in self.pending:
            self.pending[key] = input_line(key, messages, options, self.target)
        raise TeacherDeferred(f"teacher request {cid} waits for a batch", key=key)

    def flush(self, phase: str) -> BatchFile:
        """Write every pending request to ``requests-<phase>-<n>.jsonl`` (atomically) and its
        manifest. When the latest export of this phase already holds exactly these requests
        and no import has touched it yet (the run was resumed before its results were
        imported), point at it instead of writing the same requests twice."""
        if not self.pending:
            raise RuntimeError("flush() with nothing pending")
        if not re.fullmatch(r"[a-z0-9_]+", phase):
            raise ConfigError(f"phase name {phase!r} must be lower-case letters, digits or _")
        keys = sorted(self.pending)
        answered = {b for rec in self.dir.imports() for b in rec.get("batches", [])}
        same = [m for m in self.dir.manifests() if m.phase == phase and sorted(m.keys) == keys]
        if same and same[-1].requests_file.exists() and same[-1].requests_file.name not in answered:
            m = same[-1]
            self.pending.clear()
            return BatchFile(m.requests_file, m.path, phase, m.n, len(keys), reused=True)
        n = self.dir.next_n(phase)
        req = self.dir.path / f"requests-{phase}-{n}.jsonl"
        man = self.dir.path / f"requests-{phase}-{n}.manifest.json"
        atomic_write(req, "".join(dumps_line(self.pending[k]) for k in keys))
        manifest = {
            "format": MANIFEST_FORMAT,
            "run_id": self.run_id,
            "phase": phase,
            "n": n,
            "model_identity": self.model_identity,
            "target": {"model": self.target.model, "dialect": self.target.dialect},
            "requests_file": req.name,
            "sha256": sha256_file(req),
            "n_requests": len(keys),
            "keys": keys,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write(man, json.dumps(manifest, indent=2) + "\n")
        for k in keys:
            self._exports.setdefault(k, []).append(req.name)
        self.pending.clear()
        return BatchFile(req, man, phase, n, len(keys))
