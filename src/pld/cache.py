"""A content-addressed SQLite cache of completions and embeddings.

Keys are SHA-256 digests of canonical JSON built by the caller from *what was asked* (model
identity, messages, options, sample index) and never from how it was asked (API key, base URL,
headers), so a cache file is safe to share and survives key rotation. WAL mode and a busy
timeout make it safe for several processes at once. A damaged database is moved aside and
reported, never read: a wrong cached answer would silently poison a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pld.errors import CacheError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL,
                                        created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, dim INTEGER NOT NULL,
                                       vector BLOB NOT NULL, created REAL NOT NULL);
"""


def cache_key(payload: Any) -> str:
    """SHA-256 of canonical JSON (sorted keys, no whitespace, UTF-8)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def default_cache_path() -> Path:
    """Where the cache lives unless ``--cache`` says otherwise: ``$PLD_CACHE``, else the XDG cache
    folder, so every run on a machine shares one cache by default."""
    env = os.environ.get("PLD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pld" / "cache.sqlite"


_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _writable(p: Path) -> bool:
    # os.access says no for a read-only mount even to root; tests mock it to simulate 0444
    return os.access(p, os.W_OK)


class Cache:
    """Thread-safe within a process (one lock), process-safe through SQLite's WAL locking.

    A cache pld cannot write (a 0444 file, a read-only folder or mount) is still read: it is
    opened read-only, new results are not saved, and that is said once. It is never taken for
    a damaged one: only a file SQLite finds corrupt or not a database is moved aside."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.recovered_from: Path | None = None
        self.read_only = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(
                f"cannot create the cache folder {self.path.parent}: {e}; "
                "pass --cache with a writable path"
            ) from e
        if not self.path.exists() and not _writable(self.path.parent):
            raise CacheError(
                f"cannot create the cache {self.path}: its folder is not writable; pass "
                "--cache with a writable path, or --no-cache"
            )
        if self.path.exists() and not (_writable(self.path) and _writable(self.path.parent)):
            self._go_read_only("the file or its folder is not writable")
        self._conn = self._open_checked()

    def _go_read_only(self, why: str) -> None:
        if not self.read_only:
            self.read_only = True
            log.warning(
                "cache %s is read-only (%s): using it to read; new results are not saved",
                self.path,
                why,
            )

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return self._connect_read_only()
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        # A WAL database needs its -shm file; in a folder nobody can write, no writer can exist
        # either, so the file is opened as immutable (no locks, no -shm).
        uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
        if not _writable(self.path.parent):
            uri += "&immutable=1"
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"completions", "embeddings"} <= names:
            conn.close()
            raise CacheError(
                f"cache {self.path} is read-only and holds no pld cache; pass --cache with a "
                "writable path, or --no-cache"
            )
        return conn

    def _open_checked(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                conn.close()
                raise sqlite3.DatabaseError(f"quick_check says {row}")
            return conn
        except sqlite3.DatabaseError as e:
            code = getattr(e, "sqlite_errorname", None)
            if code is not None and not code.startswith(
                _DAMAGED
            ):  # cannot open, read-only, I/O ...
                raise CacheError(
                    f"cannot open cache {self.path}: {e}; pass --cache with a usable path, "
                    "or --no-cache"
                ) from e
            return self._move_aside(e)

    def _move_aside(self, e: Exception) -> sqlite3.Connection:
        # Not a database, truncated, or failing its integrity check: move it aside so no
        # bad entry is ever served, and start a fresh one. The run re-pays those calls.
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            if self.read_only:
                raise OSError("the cache is read-only")
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(self.path) + suffix)
                if p.exists():
                    p.replace(Path(str(aside) + suffix))
        except OSError as mv:
            raise CacheError(
                f"cache {self.path} is damaged ({e}) and cannot be moved aside ({mv}); delete "
                "it, or pass --cache with another path, or --no-cache"
            ) from e
        log.warning(
            "cache %s was damaged (%s); moved it to %s and started a new one", self.path, e, aside
        )
        self.recovered_from = aside
        try:
            return self._connect()
        except sqlite3.DatabaseError as e2:
            raise CacheError(f"cannot open cache {self.path}: {e2}") from e2

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run a write; on a cache that turns out read-only, warn once and keep reading."""
        if self.read_only:
            return
        try:
            with self._lock, self._conn:
                self._conn.executemany(sql, rows)
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorname", "") not in ("SQLITE_READONLY", "SQLITE_CANTOPEN"):
                raise
            self._go_read_only(str(e))

    # -- completions -------------------------------------------------------------------------
    def get_completion(self, key: str) -> dict[str, Any] | None:
        """The stored completion record, or None; an unreadable entry is dropped and treated as a
        miss rather than returned, since a wrong cached answer would poison the run."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM completions WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
            if not isinstance(value, dict) or "text" not in value:
                raise ValueError("not a completion record")
            return value
        except ValueError:
            log.warning("dropping unreadable cache entry %s", key[:12])
            self.delete_completion(key)
            return None

    def put_completion(self, key: str, value: dict[str, Any]) -> None:
        """Store one completion; a read-only cache makes it a no-op (warned once), not an error."""
        blob = json.dumps(value, sort_keys=True, ensure_ascii=False)
        self._write(
            "INSERT OR REPLACE INTO completions(key, value, created) VALUES (?,?,?)",
            [(key, blob, time.time())],
        )

    def put_completions(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Store many completions in ONE transaction: a batch import lands whole or not at all."""
        now = time.time()
        rows = [(k, json.dumps(v, sort_keys=True, ensure_ascii=False), now) for k, v in items]
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO completions(key, value, created) VALUES (?,?,?)", rows
            )

    def delete_completion(self, key: str) -> None:
        """Forget an unreadable entry, so the next lookup is a miss and the call is made again."""
        self._write("DELETE FROM completions WHERE key=?", [(key,)])

    # -- embeddings --------------------------------------------------------------------------
    def get_embedding(self, key: str) -> NDArray[np.float32] | None:
        """The stored vector, or None; a vector of the wrong shape or with non-finite values is
        dropped and treated as a miss."""
        with self._lock:
            row = self._conn.execute(
                "SELECT dim, vector FROM embeddings WHERE key=?", (key,)
            ).fetchone()
        if row is None:
            return None
        dim, blob = int(row[0]), bytes(row[1])
        vec = np.frombuffer(blob, dtype=np.float32)
        if vec.shape != (dim,) or not np.all(np.isfinite(vec)):
            self._write("DELETE FROM embeddings WHERE key=?", [(key,)])
            return None
        return vec.copy()

    def put_embeddings(self, items: list[tuple[str, NDArray[np.float32]]]) -> None:
        """Store many vectors in one write; on a read-only cache this is a no-op (warned once)."""
        now = time.time()
        rows = [
            (k, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes(), now) for k, v in items
        ]
        self._write(
            "INSERT OR REPLACE INTO embeddings(key, dim, vector, created) VALUES (?,?,?,?)", rows
        )

    def stats(self) -> dict[str, int]:
        """Entry counts per table: how callers and tests see what a run actually stored."""
        with self._lock:
            c = self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
            e = self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return {"completions": int(c), "embeddings": int(e)}

    def close(self) -> None:
        """Close the connection; the cache is unusable afterwards."""
        with self._lock:
            self._conn.close()
