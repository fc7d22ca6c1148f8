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
from click.testing import CliRunner

from pld.cache import Cache
from pld.cli import main
from pld.cli._common import RichProgress, console, summary_table
from pld.distiller import Distiller
from pld.errors import BudgetExceeded, RunDirError
from pld.models.client import Accountant
from pld.models.fake import HashEmbedder
from pld.predictions import Prediction
from pld.rulebook import Rulebook
from pld.run import Run, previous_ledger
from pld.tasks.base import Task, stratified_split
from tests.fakes import SCRIPTED_CFG, make_student, make_task, make_teacher

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "prechange_run"
CFG = SCRIPTED_CFG.with_overrides(calibrate=False)


def _split() -> tuple[Task, Task]:
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


@pytest.mark.parametrize("dest", ["missing/out.jsonl", "afile/out.jsonl"])
def test_predict_refuses_an_unwritable_out_before_any_model_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dest: str
) -> None:
    run = _finished_run(tmp_path)
    (tmp_path / "afile").write_text("x")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"id": "a", "text": "we saw apple pie", "label": "fruit"}\n')
    calls: list[int] = []

    def fake_predict(self: Rulebook, inputs: list, student: str, **kw: object) -> list:  # type: ignore[type-arg]
        calls.append(len(inputs))
        return [
            Prediction(e.id, "fruit", e.label, 1.0, 0.0, 1, 1, 0, False, "fruit") for e in inputs
        ]

    monkeypatch.setattr(Rulebook, "predict", fake_predict)
    args = ["predict", str(run), str(inputs), "--student", "local:smollm2", "--out"]
    r = CliRunner().invoke(main, [*args, str(tmp_path / dest)])
    assert r.exit_code == 2, r.output
    assert calls == []  # refused before the student was asked anything
    assert len(r.output.strip().splitlines()) == 1 and "--out" in r.output, r.output
    assert not (tmp_path / "missing").exists()
    ok = CliRunner().invoke(main, [*args, str(tmp_path / "ok.jsonl")])
    assert ok.exit_code == 0 and calls == [1], ok.output  # the same command otherwise works
    assert json.loads((tmp_path / "ok.jsonl").read_text())["label"] == "fruit"


def _truncate_last_row(p: Path) -> str:
    """Cut the last row at a field boundary: still valid JSON, but an incomplete record."""
    rows = p.read_text().splitlines()
    last = json.loads(rows[-1])
    rows[-1] = json.dumps({k: last[k] for k in list(last)[:1]})
    return "\n".join(rows) + "\n"


DAMAGES = [
    ("report", "rounds.jsonl", lambda p: p.read_text()[: len(p.read_text()) // 2]),
    ("report", "rounds.jsonl", lambda p: p.read_text() + "12\n"),
    ("report", "examples_train.jsonl", _truncate_last_row),
    ("report", "instructions.json", lambda p: "{}"),
    ("report", "calibration.json", lambda p: "[]"),
    ("predict", "run.json", lambda p: "{}"),
    ("predict", "run.json", lambda p: "[]"),
    ("predict", "run.json", lambda p: '{"task": []}'),
]


@pytest.mark.parametrize(("command", "name", "damage"), DAMAGES)
def test_damaged_artifact_is_one_line_naming_file_and_fix(
    tmp_path: Path, command: str, name: str, damage: object
) -> None:
    run = _finished_run(tmp_path)
    (run / name).write_text(damage(run / name))  # type: ignore[operator]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"id": "a", "text": "we saw apple pie"}\n')
    args = [command, str(run)] + (
        [str(inputs), "--student", "local:smollm2"] if command == "predict" else []
    )
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.exception
    line = r.output.strip()
    assert len(line.splitlines()) == 1 and str(run / name) in line, line
    assert f"pld distill --resume {run}" in line or f"pld distill --out {run} --force" in line, line


def test_a_damaged_stage_artifact_is_rebuilt_by_following_the_advice(tmp_path: Path) -> None:
    train, val = _split()
    run, cache = tmp_path / "run", Cache(tmp_path / "c.sqlite")
    d = Distiller(make_teacher(), make_student(), HashEmbedder(), config=CFG, cache=cache)
    good = d.fit(train, val, run_dir=run).instructions_
    (run / "instructions.json").write_text("{}")  # valid JSON, not an instruction set
    with pytest.raises(RunDirError) as e:
        Rulebook.load(run)
    assert f"rerun pld distill --resume {run}" in str(e.value)
    teacher = make_teacher()
    again = Distiller(teacher, make_student(), HashEmbedder(), config=CFG, cache=cache).fit(
        train, val, run_dir=run, resume=True
    )
    assert again.instructions_ == good == Rulebook.load(run).instructions
    assert teacher.requests == []  # rebuilt from the cache


def test_damaged_ledger_advice_works(tmp_path: Path) -> None:
    train, val = _split()
    run, cache = tmp_path / "run", Cache(tmp_path / "c.sqlite")
    d = Distiller(make_teacher(), make_student(), HashEmbedder(), config=CFG, cache=cache)
    good = d.fit(train, val, run_dir=run).instructions_
    text = (run / "run.json").read_text()
    (run / "run.json").write_text(text[: len(text) // 2])  # truncated
    with pytest.raises(RunDirError) as e:
        previous_ledger(run)  # what pld distill --resume reads first
    msg = str(e.value)
    assert "run.json" in msg and f"pld distill --out {run} --force" in msg, msg
    assert "--resume" not in msg  # resuming needs the ledger it would tell you to delete
    # follow it: move run.json aside, start again with --force: nothing is paid twice
    (run / "run.json").rename(tmp_path / "run.json.damaged")
    teacher = make_teacher()
    again = Distiller(teacher, make_student(), HashEmbedder(), config=CFG, cache=cache).fit(
        train, val, run_dir=run, force=True
    )
    assert again.instructions_ == good == Rulebook.load(run).instructions
    assert teacher.requests == []


def test_distill_summary_is_the_final_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pld.distiller

    teachers: list = []  # type: ignore[type-arg]

    def chat(spec: str, **kw):  # type: ignore[no-untyped-def]
        if spec == "fake:teacher":
            teachers.append(make_teacher())
            return teachers[-1]
        return make_student()

    monkeypatch.setattr(pld.distiller, "resolve_chat", chat)
    monkeypatch.setattr(pld.distiller, "resolve_embedder", lambda spec: HashEmbedder())
    data = tmp_path / "task.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": e.fields["text"], "label": e.label}) + "\n"
            for e in make_task(10).examples
        )
    )
    run = tmp_path / "run"
    first = ["distill", "--task", str(data), "--description", "What is it about?"]
    first += ["--teacher", "fake:teacher", "--student", "fake:student", "--out", str(run)]
    first += ["--eps", "0.3", "--min-samples", "3", "--max-rounds", "1", "--max-calls", "5"]
    r = CliRunner().invoke(main, first)
    assert r.exit_code == 2 and "max_calls=5" in r.output, r.output  # a budget stop
    r = CliRunner().invoke(main, ["distill", "--resume", str(run), "--max-calls", "10000"])
    assert r.exit_code == 0, r.output
    led = _ledger(run)
    lines = {
        ln.split("│")[1].strip(): ln.split("│")[2].strip()
        for ln in r.output.splitlines()
        if ln.count("│") == 3
    }
    for role, s in led["usage_by_role"].items():
        assert lines[role].startswith(f"{s['calls']} calls ({s['cache_hits']} cache hits"), role
    # and what the whole run cost: every teacher call either process made
    made = sum(len(t.requests) for t in teachers)
    assert made > led["usage_by_role"]["teacher"]["calls"]  # the first process's 5 count too
    assert lines["teacher (whole run)"].startswith(f"{made} calls ("), lines
    syn = led["phases"]["synthesize"]
    assert f"{syn['instructions']} synthesized" in lines["rules"]
