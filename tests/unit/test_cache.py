"""The SQLite cache: round trips, damage recovery, and several processes at once."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pld.cache import Cache, cache_key
from pld.errors import CacheError


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


# Read-only caches (issue #11.6). Tests run as root, and root may write a 0444 file, so the
# OS is asked through os.access (which does say "no" to root on a read-only mount) and these
# tests answer for it. SQLite then opens the file with mode=ro, which holds even for root: a
# write that got through would show up below.


def _deny_writes(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    denied = {str(p) for p in paths}
    real = os.access

    def access(p: Any, mode: int, *a: Any, **kw: Any) -> bool:
        if mode & os.W_OK and str(p) in denied:
            return False
        return real(p, mode, *a, **kw)

    monkeypatch.setattr("pld.cache.os.access", access)


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pld.cache"]


def _seeded(tmp_path: Path) -> Path:
    p = tmp_path / "c.sqlite"
    c = Cache(p)
    c.put_completion("k", {"text": "cached"})
    c.close()
    return p


def test_read_only_cache_file_is_a_read_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    p = _seeded(tmp_path)
    _deny_writes(monkeypatch, p)
    c = Cache(p)
    assert c.read_only and c.get_completion("k") == {"text": "cached"}
    c.put_completion("new", {"text": "n"})
    c.put_embeddings([("e", np.ones(3, dtype=np.float32))])
    c.close()
    (warning,) = _cache_warnings(caplog)
    assert "read-only" in warning and "damaged" not in warning
    monkeypatch.undo()
    again = Cache(p)
    assert again.get_completion("new") is None  # nothing was written through mode=ro
    assert sorted(x.name for x in tmp_path.iterdir() if "corrupt" in x.name) == []


def test_healthy_cache_in_read_only_folder_is_read_not_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    p = _seeded(tmp_path)
    _deny_writes(monkeypatch, p, tmp_path)
    c = Cache(p)
    assert c.get_completion("k") == {"text": "cached"} and c.recovered_from is None
    c.put_completion("new", {"text": "n"})
    (warning,) = _cache_warnings(caplog)
    assert "read-only" in warning
    assert [x.name for x in tmp_path.iterdir() if "corrupt" in x.name] == []


def test_new_cache_in_read_only_folder_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _deny_writes(monkeypatch, tmp_path)
    with pytest.raises(CacheError, match="folder is not writable; pass --cache") as ei:
        Cache(tmp_path / "new.sqlite")
    assert "\n" not in str(ei.value)
    assert not any("damaged" in w for w in _cache_warnings(caplog))


def test_damaged_read_only_cache_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "c.sqlite"
    p.write_bytes(b"this is not a database" * 100)
    _deny_writes(monkeypatch, p, tmp_path)
    with pytest.raises(CacheError, match=r"is damaged .* cannot be moved aside"):
        Cache(p)
    assert p.exists()


def test_write_refused_at_run_time_warns_once_and_keeps_reading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """os.access can be wrong (ACLs, remounts): a write SQLite refuses is not a traceback."""
    import sqlite3

    p = _seeded(tmp_path)
    c = Cache(p)
    c._conn.close()
    c._conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
    c.put_completion("a", {"text": "x"})
    c.put_completion("b", {"text": "x"})
    assert c.read_only and c.get_completion("k") == {"text": "cached"}
    (warning,) = _cache_warnings(caplog)
    assert "read-only" in warning
