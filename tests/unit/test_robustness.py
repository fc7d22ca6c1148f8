"""Promises kept under abuse (issue #11): user text printed literally, one process per run
directory, usage that survives interruption, checked destinations, damaged artifacts as one
clear line, advice that works, and a summary that agrees with the ledger."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from pld.cache import Cache
from pld.cli._common import RichProgress, console, summary_table
from pld.distiller import Distiller
from pld.errors import BudgetExceeded, RunDirError
from pld.models.client import Accountant
from pld.models.fake import HashEmbedder
from pld.rulebook import Rulebook
from pld.run import Run
from pld.tasks.base import stratified_split
from tests.fakes import SCRIPTED_CFG, make_student, make_task, make_teacher

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "prechange_run"
CFG = SCRIPTED_CFG.with_overrides(calibrate=False)


def _split():  # type: ignore[no-untyped-def]
    task = make_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    return task.with_examples(sp.train), task.with_examples(sp.val)


def _ledger(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / "run.json").read_text())  # type: ignore[no-any-return]


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


def test_budget_stop_keeps_the_usage_of_every_call_made(tmp_path: Path) -> None:
    train, val = _split()
    run, cache = tmp_path / "run", Cache(tmp_path / "c.sqlite")
    teacher = make_teacher()  # concurrency 2: calls are in flight when the cap is reached
    with pytest.raises(BudgetExceeded):
        Distiller(
            teacher,
            make_student(),
            HashEmbedder(),
            config=CFG.with_overrides(max_calls=7),
            cache=cache,
        ).fit(train, val, run_dir=run)
    made = len(teacher.requests)
    assert made == 7 == cache.stats()["completions"]
    assert _ledger(run)["usage_by_role"]["teacher"]["calls"] == made
    Distiller(make_teacher(), make_student(), HashEmbedder(), config=CFG, cache=cache).fit(
        train, val, run_dir=run, resume=True
    )
    assert _ledger(run)["usage_earlier_processes"][-1]["usage_by_role"]["teacher"]["calls"] == made
