"""Distiller: estimator conventions, artifacts, resume without repeated calls."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pld.cache import Cache
from pld.config import DistillConfig
from pld.distiller import Distiller
from pld.errors import BudgetExceeded, ConfigError, NotFittedError, RunDirError
from pld.models.base import GenOptions, Message
from pld.models.fake import HashEmbedder, ScriptedChatModel
from pld.rundir import FILES
from pld.tasks.base import Task, stratified_split
from tests.fakes import (
    KEYWORDS,
    SCRIPTED_CFG,
    make_student,
    make_task,
    make_teacher,
    teacher_reply,
)

CFG = SCRIPTED_CFG.with_overrides(calibrate=False)


def _split() -> tuple[Task, Task, Task]:
    task = make_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    return task, task.with_examples(sp.train), task.with_examples(sp.val)


def test_predict_before_fit_raises() -> None:
    with pytest.raises(NotFittedError):
        Distiller(make_teacher(), make_student(), HashEmbedder()).predict(["x"])


def test_fit_writes_every_artifact_and_predicts(tmp_path: Path) -> None:
    task, train, val = _split()
    teacher, student = make_teacher(), make_student()
    d = Distiller(teacher, student, HashEmbedder(), config=CFG, cache=tmp_path / "c.sqlite")
    assert d.fit(train, val, run_dir=tmp_path / "run") is d
    run = tmp_path / "run"
    for name in FILES:
        if name != "calibration.json":  # calibrate=False in CFG
            assert (run / name).exists(), name
    assert not (run / "calibration.json").exists()
    meta = json.loads((run / "run.json").read_text())
    assert set(meta["phases"]) == {"extract", "synthesize", "resolve", "finalize", "decide", "lint"}
    assert meta["usage_by_role"]["teacher"]["calls"] == len(teacher.requests)
    assert (run / "system_prompt.txt").read_text() == d.system_prompt_
    assert d.instructions_.labels_covered() == set(task.labels)
    preds = d.predict(list(val.examples))
    assert [p.label for p in preds] == [e.label for e in val.examples]
    # the saved prompt works verbatim: reload and predict the same
    loaded = Distiller.load(run, student=make_student())
    again = loaded.predict(list(val.examples))
    assert [p.label for p in again] == [p.label for p in preds]
    # a loaded Distiller only predicts: it never takes its student for a teacher
    assert loaded.teacher is None
    with pytest.raises(ConfigError, match="no teacher"):
        loaded.fit(train, val, run_dir=tmp_path / "run2")


def test_resume_after_interruption_repeats_no_teacher_call(tmp_path: Path) -> None:
    _, train, val = _split()
    cache = Cache(tmp_path / "c.sqlite")
    teacher1 = make_teacher()
    # cap = exactly the extraction calls: phase 1 completes, phase 2 hits the cap
    cfg = CFG.with_overrides(max_calls=len(train.examples))
    with pytest.raises(BudgetExceeded):
        Distiller(teacher1, make_student(), HashEmbedder(), config=cfg, cache=cache).fit(
            train, val, run_dir=tmp_path / "run"
        )
    assert (tmp_path / "run" / "rules.jsonl").exists()
    assert not (tmp_path / "run" / "instructions.json").exists()
    n_extract = len(teacher1.requests)
    assert n_extract == len(train.examples)

    teacher2 = make_teacher()
    Distiller(
        teacher2,
        make_student(),
        HashEmbedder(),
        config=CFG.with_overrides(max_calls=1000),
        cache=cache,
    ).fit(train, val, run_dir=tmp_path / "run", resume=True)
    extraction_prompts = [
        r
        for r in teacher2.requests
        if "The correct label for this input is" in r.messages[1].content
    ]
    assert extraction_prompts == []
    assert (tmp_path / "run" / "instructions.json").exists()
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    earlier = meta["usage_earlier_processes"][0]["usage_by_role"]["teacher"]
    assert earlier["calls"] == n_extract  # the interrupted process's spend is still on record


def test_extract_max_asks_about_a_stratified_subset_and_keeps_the_whole_train(
    tmp_path: Path,
) -> None:
    task, train, val = _split()
    teacher = make_teacher()
    cfg = CFG.with_overrides(extract_max=3)
    Distiller(teacher, make_student(), HashEmbedder(), config=cfg).fit(
        train, val, run_dir=tmp_path / "run"
    )
    extraction = [
        r
        for r in teacher.requests
        if "The correct label for this input is" in r.messages[1].content
    ]
    assert len(extraction) == 3 < len(train.examples)
    rules = [json.loads(x) for x in (tmp_path / "run" / "rules.jsonl").read_text().splitlines()]
    by_id = {e.id: e.label for e in train.examples}
    assert len({by_id[r["example_id"]] for r in rules}) == len(task.labels)  # stratified
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["n_train"] == len(train.examples)  # the later phases still see every example
    with pytest.raises(ConfigError, match="extract_max"):
        DistillConfig(extract_max=0)


def _teacher_whose_full_metal_merge_is_bad() -> ScriptedChatModel:
    """The scripted teacher, except that shown every metal rule (the paper's synthesis) it
    merges them into an instruction that never names iron, so the student misses metal."""
    state: dict[str, Any] = {}

    def reply(m: Sequence[Message], o: GenOptions) -> str:
        user = m[1].content
        if "Merge them into ONE" in user and len(re.findall(r"^- \(metal\) ", user, re.M)) == 5:
            return json.dumps(
                {
                    "topic": "metal topic",
                    "instruction": "If the text describes hard grey workshop materials, "
                    "the label is metal.",
                    "labels": ["metal"],
                }
            )
        return teacher_reply(m, o, state=state)

    return ScriptedChatModel(reply, name="teacher")


def test_synthesis_candidates_resolve_from_the_one_validation_scores_best(
    tmp_path: Path,
) -> None:
    _, train, val = _split()
    single, several = make_teacher(), _teacher_whose_full_metal_merge_is_bad()
    cfg = CFG.with_overrides(max_rounds=0)
    one = Distiller(single, make_student(), HashEmbedder(), config=cfg, cache=tmp_path / "1")
    one.fit(train, val, run_dir=tmp_path / "one")
    assert not (tmp_path / "one" / "synthesis_candidates.json").exists()
    two = Distiller(
        several,
        make_student(),
        HashEmbedder(),
        config=cfg.with_overrides(synthesis_candidates=2),
        cache=tmp_path / "2",
    )
    two.fit(train, val, run_dir=tmp_path / "two")
    merges = [r for r in several.requests if "Merge them into ONE" in r.messages[1].content]
    assert len(merges) == 2 * len(KEYWORDS)  # one call per cluster and candidate
    shown = sorted(len(re.findall(r"^- \(", r.messages[1].content, re.M)) for r in merges)
    assert shown == [4, 4, 4, 5, 5, 5]  # candidate 1 shows ceil(2/3 of 5) rules per cluster
    rec = json.loads((tmp_path / "two" / "synthesis_candidates.json").read_text())
    rows = rec["candidates"]
    assert rec["chosen"] == 1 and [r["chosen"] for r in rows] == [False, True]
    assert rows[0]["score"] < rows[1]["score"] == 1.0
    assert "candidate 1 of 2" in rec["reason"]
    v0 = json.loads((tmp_path / "two" / "instructions_v0.json").read_text())
    assert "iron" in json.dumps(v0["instructions"]) and v0["notes"][-1].startswith("synthesis:")
    assert "iron" not in json.dumps(rows[0]["instruction_set"])
    meta = json.loads((tmp_path / "two" / "run.json").read_text())
    assert meta["phases"]["synthesize"]["chosen"] == 1
    ok = [e.label for e in val.examples]
    assert [p.label for p in one.predict(list(val.examples))] == ok
    assert [p.label for p in two.predict(list(val.examples))] == ok
    # a forced refit with one synthesis leaves no stale record of the earlier choice
    one.fit(train, val, run_dir=tmp_path / "two", force=True)
    assert not (tmp_path / "two" / "synthesis_candidates.json").exists()
    with pytest.raises(ConfigError, match="synthesis_share"):
        DistillConfig(synthesis_share=0.0)


def test_synthesis_pool_adds_only_training_items_extraction_did_not_use(tmp_path: Path) -> None:
    _, train, val = _split()
    cfg = CFG.with_overrides(max_rounds=0, synthesis_candidates=2, extract_max=3)
    student = make_student()
    d = Distiller(make_teacher(), student, HashEmbedder(), config=cfg.with_overrides(
        synthesis_pool=5), cache=tmp_path / "c")  # fmt: skip
    d.fit(train, val, run_dir=tmp_path / "run")
    rec = json.loads((tmp_path / "run" / "synthesis_candidates.json").read_text())
    assert (rec["n_items"], rec["n_val"], rec["n_pool"]) == (len(val.examples) + 5, 15, 5)
    asked = {
        json.loads(x)["example_id"]
        for x in (tmp_path / "run" / "rules.jsonl").read_text().splitlines()
    }
    scored = "\n".join(r.messages[-1].content for r in student.requests)
    pooled = {e.id for e in train.examples if f"{e.fields['text']}\n" in scored + "\n"}
    assert len(asked) == 3 and asked.isdisjoint(pooled) and len(pooled) >= 5
    # without extract_max every training item fed a rule, and without candidates there is
    # no choice: either way the setting would do nothing, so it is refused by name
    for bad in ({"synthesis_candidates": 2}, {"extract_max": 3}):
        with pytest.raises(ConfigError, match="set extract_max and synthesis_candidates >= 2"):
            DistillConfig(synthesis_pool=5, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="synthesis_pool"):
        DistillConfig(synthesis_pool=-1)


def test_rundir_refuses_non_empty_without_resume_or_force(tmp_path: Path) -> None:
    _, train, val = _split()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "other.txt").write_text("x")
    d = Distiller(make_teacher(), make_student(), HashEmbedder(), config=CFG)
    with pytest.raises(RunDirError, match=r"not empty; pass --resume .* or --force"):
        d.fit(train, val, run_dir=tmp_path / "run")
    with pytest.raises(RunDirError, match="contradict"):
        d.fit(train, val, run_dir=tmp_path / "run", resume=True, force=True)


def test_resume_with_different_settings_is_refused(tmp_path: Path) -> None:
    _, train, val = _split()
    cache = tmp_path / "c.sqlite"
    Distiller(make_teacher(), make_student(), HashEmbedder(), config=CFG, cache=cache).fit(
        train, val, run_dir=tmp_path / "run"
    )
    with pytest.raises(ConfigError, match="different data or settings"):
        Distiller(
            make_teacher(),
            make_student(),
            HashEmbedder(),
            config=CFG.with_overrides(eps=0.2),
            cache=cache,
        ).fit(train, val, run_dir=tmp_path / "run", resume=True)


def test_fit_does_not_mutate_callers_models(tmp_path: Path) -> None:
    _, train, val = _split()
    teacher, student, emb = make_teacher(), make_student(), HashEmbedder()
    before = (vars(teacher).keys(), student.identity, emb.dim)
    Distiller(teacher, student, emb, config=CFG, cache=tmp_path / "c").fit(train, val)
    assert (vars(teacher).keys(), student.identity, emb.dim) == before


def test_config_rejects_unknown_and_invalid() -> None:
    with pytest.raises(ConfigError, match="unknown config keys"):
        DistillConfig.from_dict({"epsilon": 0.3})
    with pytest.raises(ConfigError, match="eps"):
        DistillConfig(eps=3.0)


def test_injection_in_training_data_never_reaches_the_rulebook(tmp_path: Path) -> None:
    """Issue #11.5: an obedient teacher copies instructions found in its input; the rule
    checks must drop them whatever the teacher does, and say why."""
    from tests.fakes import INJECTIONS, make_injected_task, make_obedient_teacher

    task = make_injected_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    train, val = task.with_examples(sp.train), task.with_examples(sp.val)
    assert any(inj in ex.fields["text"] for ex in train.examples for inj in INJECTIONS)
    d = Distiller(make_obedient_teacher(), make_student(), HashEmbedder(), config=CFG)
    d.fit(train, val, run_dir=tmp_path / "run")
    prompt = (tmp_path / "run" / "system_prompt.txt").read_text()
    for inj in INJECTIONS:
        assert inj.split(",")[0].lower() not in prompt.lower()
        assert "answer fruit" not in prompt.lower()
    failures = [
        json.loads(line)
        for line in (tmp_path / "run" / "extraction_failures.jsonl").read_text().splitlines()
    ]
    reasons = " ".join(f["reason"] for f in failures)
    assert "applies unconditionally" in reasons
    assert "answer fruit" in " ".join(f["last_output"] for f in failures)
