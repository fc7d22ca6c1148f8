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
    env = os.environ.get("PLD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pld" / "cache.sqlite"


class Cache:
    """Thread-safe within a process (one lock), process-safe through SQLite's WAL locking."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.recovered_from: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(
                f"cannot create the cache folder {self.path.parent}: {e}; "
                "pass --cache with a writable path"
            ) from e
        self._conn = self._open_checked()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
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
            # Not a database, truncated, or failing its integrity check: move it aside so no
            # bad entry is ever served, and start a fresh one. The run re-pays those calls.
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(self.path) + suffix)
                if p.exists():
                    p.replace(Path(str(aside) + suffix))
            log.warning(
                "cache %s was damaged (%s); moved it to %s and started a new one",
                self.path,
                e,
                aside,
            )
            self.recovered_from = aside
            try:
                return self._connect()
            except sqlite3.DatabaseError as e2:
                raise CacheError(f"cannot open cache {self.path}: {e2}") from e2

    # -- completions -------------------------------------------------------------------------
    def get_completion(self, key: str) -> dict[str, Any] | None:
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
        blob = json.dumps(value, sort_keys=True, ensure_ascii=False)
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO completions(key, value, created) VALUES (?,?,?)",
                (key, blob, time.time()),
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
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM completions WHERE key=?", (key,))

    # -- embeddings --------------------------------------------------------------------------
    def get_embedding(self, key: str) -> NDArray[np.float32] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT dim, vector FROM embeddings WHERE key=?", (key,)
            ).fetchone()
        if row is None:
            return None
        dim, blob = int(row[0]), bytes(row[1])
        vec = np.frombuffer(blob, dtype=np.float32)
        if vec.shape != (dim,) or not np.all(np.isfinite(vec)):
            with self._lock, self._conn:
                self._conn.execute("DELETE FROM embeddings WHERE key=?", (key,))
            return None
        return vec.copy()

    def put_embeddings(self, items: list[tuple[str, NDArray[np.float32]]]) -> None:
        now = time.time()
        rows = [
            (k, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes(), now) for k, v in items
        ]
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO embeddings(key, dim, vector, created) VALUES (?,?,?,?)",
                rows,
            )

    def stats(self) -> dict[str, int]:
        with self._lock:
            c = self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
            e = self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return {"completions": int(c), "embeddings": int(e)}

    def close(self) -> None:
        with self._lock:
            self._conn.close()
