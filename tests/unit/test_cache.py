"""The SQLite cache: round trips, damage recovery, and several processes at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np

from pld.cache import Cache, cache_key


def test_key_is_canonical() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_roundtrip(tmp_path: Path) -> None:
    c = Cache(tmp_path / "c.sqlite")
    c.put_completion("k", {"text": "hi", "n": 1})
    assert c.get_completion("k") == {"text": "hi", "n": 1}
    assert c.get_completion("missing") is None
    v = np.arange(4, dtype=np.float32)
    c.put_embeddings([("e", v)])
    got = c.get_embedding("e")
    assert got is not None and (got == v).all()


def test_garbage_file_is_moved_aside_and_reported(tmp_path: Path) -> None:
    p = tmp_path / "c.sqlite"
    p.write_bytes(b"this is not a database" * 100)
    c = Cache(p)
    assert c.recovered_from is not None and c.recovered_from.exists()
    assert c.get_completion("k") is None
    c.put_completion("k", {"text": "fresh"})
    assert c.get_completion("k") == {"text": "fresh"}


def test_truncated_database_recovers_without_bad_entries(tmp_path: Path) -> None:
    p = tmp_path / "c.sqlite"
    c = Cache(p)
    for i in range(300):
        c.put_completion(f"k{i}", {"text": "x" * 500})
    c.close()
    # fold the WAL in, then cut the file in half
    import sqlite3

    con = sqlite3.connect(p)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    c2 = Cache(p)
    assert c2.recovered_from is not None
    assert c2.stats()["completions"] == 0


def test_unreadable_row_is_a_miss(tmp_path: Path) -> None:
    c = Cache(tmp_path / "c.sqlite")
    with c._conn:
        c._conn.execute(
            "INSERT INTO completions(key, value, created) VALUES ('bad', '{not json', 0)"
        )
    assert c.get_completion("bad") is None
    assert c.stats()["completions"] == 0


def _writer(path: str, who: int, n: int) -> None:
    c = Cache(path)
    for i in range(n):
        c.put_completion(f"{who}-{i}", {"text": f"{who}:{i}"})
        assert c.get_completion(f"{who}-{i}") == {"text": f"{who}:{i}"}


def test_two_processes_share_one_cache(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    Cache(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    c = Cache(path)
    assert c.recovered_from is None
    assert c.stats()["completions"] == 400
    assert c.get_completion("1-199") == {"text": "1:199"}
