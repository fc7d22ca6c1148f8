"""A run directory written before the Rulebook/Run restructuring (tests/fixtures, made at
commit 2708942 by tests/fixtures/make_prechange_run.py) still loads and predicts identically,
and a fresh fit sends exactly the requests the old code sent (so cached replies keep hitting)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from pld.config import DistillConfig
from pld.distiller import Distiller
from pld.models.fake import HashEmbedder, ScriptedChatModel
from pld.prompts import system_prompt_for
from pld.rulebook import Rulebook
from pld.tasks.base import stratified_split
from tests.fakes import LogprobStudent, make_task, make_teacher
from tests.fixtures.make_prechange_run import CFG, EDITS, request_hashes

FIX = Path(__file__).resolve().parents[1] / "fixtures"
RUN = FIX / "prechange_run"


def _expected() -> list[dict[str, object]]:
    return [json.loads(x) for x in (FIX / "prechange_predictions.jsonl").read_text().splitlines()]


def test_prechange_run_loads_with_byte_identical_prompt() -> None:
    rb = Rulebook.load(RUN)
    saved = (RUN / "system_prompt.txt").read_bytes()
    assert rb.system_prompt.encode("utf-8") == saved
    assert system_prompt_for(rb.task, rb.instructions).encode("utf-8") == saved
    assert rb.user_template == (RUN / "user_template.txt").read_text()
    assert rb.prior == json.loads((RUN / "calibration.json").read_text())["prior"]
    assert [r["round"] for r in rb.rounds] == [0, 1]
    assert set(rb.sources) == set(json.loads((RUN / "run.json").read_text())["train_ids"])


def test_prechange_run_predicts_identically(caplog: pytest.LogCaptureFixture) -> None:
    items = list(make_task(10).examples)
    with caplog.at_level(logging.WARNING):
        got = Rulebook.load(RUN).predict(items, LogprobStudent())
        via_distiller = Distiller.load(RUN, student=LogprobStudent(), use_cache=False).predict(
            items
        )
    assert [p.to_json() for p in got] == _expected()
    assert [p.to_json() for p in via_distiller] == _expected()
    assert "does not match" not in caplog.text  # the saved prior is the recomputed one


def test_a_changed_calibration_prior_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    cal = json.loads((run / "calibration.json").read_text())
    cal["prior"] = {k: 1 / 3 for k in cal["prior"]}
    (run / "calibration.json").write_text(json.dumps(cal))
    with caplog.at_level(logging.WARNING):
        got = Rulebook.load(run).predict(list(make_task(10).examples), LogprobStudent())
    assert "calibration.json does not match the student's prior now" in caplog.text
    assert [p.to_json() for p in got] == _expected()  # the student's own prior is used


def _fit(tmp_path: Path, cfg: DistillConfig) -> tuple[ScriptedChatModel, LogprobStudent]:
    task = make_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    teacher = make_teacher(bad_ids=("fruit-01",), resolve_edits=EDITS)
    student = LogprobStudent()
    Distiller(teacher, student, HashEmbedder(), config=cfg, cache=tmp_path / "c.sqlite").fit(
        task.with_examples(sp.train), task.with_examples(sp.val), run_dir=tmp_path / "run"
    )
    return teacher, student


# The one-candidate loop on validation alone, without the decide stage (issue #13's additions).
LEGACY = replace(CFG, resolve_candidates=1, resolve_pool=0, decide=False)


def test_a_fresh_fit_with_the_legacy_settings_sends_the_prechange_requests(tmp_path: Path) -> None:
    teacher, student = _fit(tmp_path, LEGACY)
    old = json.loads((FIX / "prechange_requests.json").read_text())
    assert request_hashes(teacher.requests) == old["teacher"]
    assert request_hashes(student.requests) == old["student"]
    for name in ("system_prompt.txt", "instructions.json", "calibration.json", "prompt.md"):
        assert (tmp_path / "run" / name).read_bytes() == (RUN / name).read_bytes(), name
    assert not (tmp_path / "run" / "decision.json").exists()


def test_a_fresh_fit_with_the_defaults_still_sends_every_prechange_request(tmp_path: Path) -> None:
    """More candidates, a larger pool and the decide stage add requests; every request the old
    code sent is still among them (so recorded replies keep hitting the cache) — unless the
    loop judges under other scores than the old code did (``resolve_fit_calibration``: this
    student's raw scores beat its calibrated ones), which changes what the teacher is shown."""
    teacher, student = _fit(tmp_path, replace(CFG, resolve_fit_calibration=False))
    old = json.loads((FIX / "prechange_requests.json").read_text())
    assert set(old["teacher"]) <= set(request_hashes(teacher.requests))
    assert set(old["student"]) <= set(request_hashes(student.requests))
    assert (tmp_path / "run" / "decision.json").exists()


def test_judging_under_the_fitted_calibration_is_recorded_and_changes_what_is_shown(
    tmp_path: Path,
) -> None:
    teacher, _ = _fit(tmp_path, CFG)
    rounds = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    scoring = rounds[0]["scoring"]
    assert scoring["calibrate"] is False and "better in" in scoring["reason"]
    old = json.loads((FIX / "prechange_requests.json").read_text())
    assert not set(old["teacher"]) <= set(request_hashes(teacher.requests))


def test_naming_cues_asks_for_cue_terms_in_every_teacher_phase_and_only_when_set(
    tmp_path: Path,
) -> None:
    """``name_cues`` changes the three teacher prompts (extraction, consolidation, resolve) and
    nothing else; off (the default) no prompt mentions it, which the legacy-request test above
    pins byte for byte."""
    cue = "cue term"
    on, _ = _fit(tmp_path / "on", replace(CFG, name_cues=True))
    off, _ = _fit(tmp_path / "off", CFG)
    asks = [r.messages[-1].content for r in on.requests]
    kinds = {
        "extract": "The correct label for this input is",
        "consolidate": "Merge them into ONE",
        "resolve": "It got these inputs WRONG",
    }
    for phase, marker in kinds.items():
        mine = [a for a in asks if marker in a]
        assert mine and all(cue in a for a in mine), phase
    assert not any(cue in r.messages[-1].content for r in off.requests)
    assert json.loads((tmp_path / "on" / "run" / "run.json").read_text())["config"]["name_cues"]
