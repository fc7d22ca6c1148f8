"""Teacher batch mode wired into a fit and the CLI, with fakes: distill --teacher-batch →
teacher run → teacher import → resume gives the live rulebook; every bad results file is
refused by ``pld teacher import`` with exit 2, naming the line, and nothing is imported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pld.batch import BatchDir, run_batch_file
from pld.batchrun import import_into_run
from pld.cache import Cache
from pld.cli import main
from pld.demo import DEMO_TEACHER, demo_data, demo_distiller, recorded_answerer, recording_path
from pld.distiller import Distiller
from pld.errors import ConfigError, TeacherBatchPending
from pld.models.fake import HashEmbedder, ScriptedChatModel
from pld.models.registry import parse_spec
from pld.tasks.base import Task, stratified_split
from tests.fakes import SCRIPTED_CFG, make_student, make_task, make_teacher, teacher_reply

CFG = SCRIPTED_CFG.with_overrides(calibrate=False)
N = 15  # training examples, hence extraction requests


def _data() -> tuple[Task, Task]:
    task = make_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    return task.with_examples(sp.train), task.with_examples(sp.val)


def _distiller(cache: Cache, batch: Path | None, teacher: Any = None) -> Distiller:
    return Distiller(
        teacher if teacher is not None else make_teacher(),
        make_student(),
        HashEmbedder(),
        config=CFG,
        cache=cache,
        teacher_batch=batch,
    )


def _fit(d: Distiller, run: Path, *, resume: bool) -> TeacherBatchPending | None:
    train, val = _data()
    try:
        d.fit(train, val, run_dir=run, resume=resume)
    except TeacherBatchPending as p:
        return p
    return None


def test_batch_cycle_gives_the_live_rulebook_and_sends_nothing(tmp_path: Path) -> None:
    train, val = _data()
    live = _distiller(Cache(tmp_path / "live.sqlite"), None)
    live.fit(train, val, run_dir=tmp_path / "live")

    cache, run, batch = Cache(tmp_path / "b.sqlite"), tmp_path / "run", tmp_path / "batch"
    never_called = make_teacher()  # the batch-mode teacher must not be asked anything
    answerer = make_teacher()  # plays the provider's batch service
    phases, resume = [], False
    while (p := _fit(_distiller(cache, batch, never_called), run, resume=resume)) is not None:
        phases.append(p.phase)
        assert f"pld teacher import {run}" in str(p) and "pld distill --resume" in str(p)
        results = tmp_path / f"results-{len(phases)}.jsonl"
        rep = run_batch_file(p.requests_file, answerer, results)
        assert not rep.failed
        imp = import_into_run(run, [results])
        assert imp.imported == rep.answered and not imp.problems
        resume = True
    assert never_called.requests == []
    assert phases[:2] == ["extract", "synthesize"] and set(phases) <= {
        "extract",
        "synthesize",
        "resolve",
    }
    assert (run / "system_prompt.txt").read_bytes() == (
        tmp_path / "live" / "system_prompt.txt"
    ).read_bytes()
    ledger = json.loads((run / "run.json").read_text())
    assert len(answerer.requests) == ledger["teacher_batch"]["usage"]["replies"]
    assert ledger["teacher_batch"]["usage"] == BatchDir(batch).usage()
    assert len(ledger["run_id"]) == 32


def test_run_id_is_kept_on_resume(tmp_path: Path) -> None:
    cache, run = Cache(tmp_path / "c.sqlite"), tmp_path / "run"
    assert _fit(_distiller(cache, tmp_path / "b"), run, resume=False) is not None
    first = json.loads((run / "run.json").read_text())["run_id"]
    assert _fit(_distiller(cache, tmp_path / "b"), run, resume=True) is not None
    assert json.loads((run / "run.json").read_text())["run_id"] == first


def test_batch_mode_needs_a_run_directory_and_no_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = _data()
    with pytest.raises(ConfigError, match="run directory"):
        _distiller(Cache(tmp_path / "c.sqlite"), tmp_path / "b").fit(train, val)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    d = Distiller(
        "openai:gpt-4.1",
        make_student(),
        HashEmbedder(),
        config=CFG,
        cache=tmp_path / "c.sqlite",
        teacher_batch=tmp_path / "b",
    )
    p = _fit(d, tmp_path / "run", resume=False)
    assert p is not None and p.phase == "extract"
    line = json.loads(Path(p.requests_file).read_text().splitlines()[0])
    assert line["body"]["model"] == "gpt-4.1" and "key" not in json.dumps(line).lower()


def test_cache_prompt_spec_option_is_validated() -> None:
    assert parse_spec("local:smollm2?cache_prompt=off").options == {"cache_prompt": "off"}
    with pytest.raises(ConfigError, match=r"cache_prompt=.* must be one of: on, off"):
        parse_spec("local:smollm2?cache_prompt=maybe")


# -- pld teacher import on bad files (CLI level) -------------------------------------------


@pytest.fixture()
def pending_run(tmp_path: Path) -> tuple[Path, Path, Cache]:
    """A run waiting for its extraction batch, and a correct results file for it."""
    cache, run = Cache(tmp_path / "c.sqlite"), tmp_path / "run"
    p = _fit(_distiller(cache, tmp_path / "batch"), run, resume=False)
    assert p is not None
    results = tmp_path / "results.jsonl"
    rep = run_batch_file(p.requests_file, make_teacher(), results)
    assert rep.answered == N and not rep.failed
    return run, results, cache


def _import(*args: str) -> Any:
    return CliRunner().invoke(main, ["teacher", "import", *args])


def _nothing_imported(run: Path, cache: Cache) -> None:
    ledger = json.loads((run / "run.json").read_text())
    keys = [
        json.loads(x)["custom_id"][4:]
        for x in Path(ledger["teacher_batch"]["pending"]["requests_file"]).read_text().splitlines()
    ]
    assert all(cache.get_completion(k) is None for k in keys)
    assert ledger["teacher_batch"]["usage"]["replies"] == 0
    assert not (Path(ledger["teacher_batch"]["dir"]) / "imports.jsonl").exists()


def _then_the_good_file_imports(run: Path, results: Path, cache: Cache) -> None:
    r = _import(str(run), str(results))
    assert r.exit_code == 0, r.output
    assert f"imported {N} teacher replies" in r.output
    assert json.loads((run / "run.json").read_text())["teacher_batch"]["usage"]["replies"] == N


def test_import_refuses_a_damaged_file(pending_run: tuple[Path, Path, Cache]) -> None:
    run, results, cache = pending_run
    bad = results.with_name("damaged.jsonl")
    text = results.read_text()
    bad.write_text(text[: len(text) - 40])  # a download cut short
    r = _import(str(run), str(bad))
    assert r.exit_code == 2
    assert "nothing was imported" in r.output and f"{bad}:{N}: not valid JSON" in r.output
    _nothing_imported(run, cache)
    _then_the_good_file_imports(run, results, cache)


def test_import_refuses_results_for_another_run(
    pending_run: tuple[Path, Path, Cache], tmp_path: Path
) -> None:
    run, results, cache = pending_run
    other_teacher = ScriptedChatModel(
        lambda m, o: teacher_reply(m, o, state={}), name="other-teacher"
    )
    p = _fit(
        _distiller(Cache(tmp_path / "o.sqlite"), tmp_path / "obatch", other_teacher),
        tmp_path / "other",
        resume=False,
    )
    assert p is not None
    theirs = tmp_path / "theirs.jsonl"
    run_batch_file(p.requests_file, make_teacher(), theirs)
    r = _import(str(run), str(theirs))
    assert r.exit_code == 2
    assert "is not a request of this run" in r.output and f"{theirs}:1:" in r.output
    _nothing_imported(run, cache)
    _then_the_good_file_imports(run, results, cache)


def test_import_refuses_conflicting_duplicates_and_tolerates_identical_ones(
    pending_run: tuple[Path, Path, Cache],
) -> None:
    run, results, cache = pending_run
    lines = results.read_text().splitlines()
    changed = json.loads(lines[2])
    changed["response"]["body"]["choices"][0]["message"]["content"] = '{"x": 1}'
    conflict = results.with_name("conflict.jsonl")
    conflict.write_text("\n".join([*lines, json.dumps(changed)]) + "\n")
    r = _import(str(run), str(conflict))
    assert r.exit_code == 2
    assert f"{conflict}:{N + 1}: conflicts with {conflict}:3" in r.output
    _nothing_imported(run, cache)
    same = results.with_name("same.jsonl")
    same.write_text("\n".join([*lines, lines[2], lines[5]]) + "\n")
    r = _import(str(run), str(same))
    assert r.exit_code == 0, r.output
    assert f"imported {N} teacher replies" in r.output and "2 identical duplicate" in r.output


def test_import_refuses_a_file_missing_a_line(pending_run: tuple[Path, Path, Cache]) -> None:
    run, results, cache = pending_run
    lines = results.read_text().splitlines()
    short = results.with_name("short.jsonl")
    short.write_text("\n".join(lines[:4] + lines[5:]) + "\n")
    r = _import(str(run), str(short))
    assert r.exit_code == 2
    assert f"no result line for 1 of the {N} requests" in r.output and "--partial" in r.output
    _nothing_imported(run, cache)
    # --partial imports the nine and leaves the tenth pending for the next batch
    r = _import(str(run), str(short), "--partial")
    assert r.exit_code == 0, r.output
    assert (
        f"imported {N - 1} teacher replies" in r.output
        and "1 requests of this run still" in r.output
    )
    p = _fit(_distiller(cache, run.parent / "batch"), run, resume=True)
    assert p is not None and p.phase == "extract"
    assert len(Path(p.requests_file).read_text().splitlines()) == 1


def test_the_demo_recording_answers_every_extraction_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails when a change to the extraction prompt (or the demo's split or settings) makes
    the demo ask its recorded teacher something new: record it again, on purpose
    (python -m bench.record_demo_teacher). The later phases are checked with the real
    embedder and student in tests/integration/test_demo_recording.py."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    task, sp = demo_data()
    d = demo_distiller(
        DEMO_TEACHER, make_student(), 2, Cache(tmp_path / "c.sqlite"), embedder=HashEmbedder()
    )
    d.teacher_batch = tmp_path / "batch"
    with pytest.raises(TeacherBatchPending) as e:
        d.fit(task.with_examples(sp.train), task.with_examples(sp.val), run_dir=tmp_path / "r")
    assert e.value.phase == "extract"
    req = Path(e.value.requests_file)
    assert len(req.read_text().splitlines()) == len(sp.train) == 40
    missing = recorded_answerer(recording_path())(req, tmp_path / "results.jsonl")
    assert missing == [], f"{len(missing)} demo extraction requests are not in the recording"
