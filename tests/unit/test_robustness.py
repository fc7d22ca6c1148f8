"""Promises kept under abuse (issue #11): user text printed literally, one process per run
directory, usage that survives interruption, checked destinations, damaged artifacts as one
clear line, advice that works, and a summary that agrees with the ledger."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from pld.cli._common import RichProgress, console, summary_table
from pld.errors import RunDirError
from pld.models.client import Accountant
from pld.rulebook import Rulebook
from pld.run import Run

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "prechange_run"

HOSTILE = ("[red]", "runs/a[/]b", "openai:m:latest@http://h/v1", "error [/x] :smile:")


def test_user_text_prints_literally_never_as_markup_or_emoji(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    c = console()
    c.file = io.StringIO()
    c.print(summary_table("pld distill [/x]", [(k, k) for k in HOSTILE]))
    c.print(f"wrote 3 predictions to {HOSTILE[1]}; {HOSTILE[3]}")
    with RichProgress(c) as prog:
        prog.start("label [/x]", 1)
        prog.advance("label [/x]")
        prog.end("label [/x]")
    text = c.file.getvalue()
    for s in (*HOSTILE, "pld distill [/x]", "label [/x]"):
        assert s in text
    assert "Ⓜ" not in text and "😄" not in text


def _finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIX, run)
    return run


def test_one_process_per_run_directory_readers_need_no_lock(tmp_path: Path) -> None:
    run = _finished_run(tmp_path)
    with Run(run, Accountant(), resume=True):
        for kw in ({"resume": True}, {"force": True}):
            with pytest.raises(
                RunDirError, match=rf"in use by another pld process \(PID {os.getpid()}\)"
            ):
                Run(run, Accountant(), **kw)
        with pytest.raises(RunDirError, match="in use"):
            Rulebook.load(run).save(tmp_path / "copy")  # fine: another directory
            Rulebook.load(run).save(run)
        assert (run / "instructions.json").exists()  # --force deleted nothing
        assert Rulebook.load(run).labels  # pld predict / report read without the lock
    with Run(run, Accountant(), force=True):  # released at exit
        assert not (run / "instructions.json").exists()
