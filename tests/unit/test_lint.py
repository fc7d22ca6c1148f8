"""The rulebook lint (pld.lint): each check finds its planted problem, with its code, and a
clean rulebook gives none; it runs at the end of every fit, --strict fails it, and the CLI
and the report show its findings."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pld.cli import main
from pld.cli.distill import summary_rows
from pld.distiller import Distiller
from pld.errors import BackendUnavailable, LintFailed
from pld.lint import (
    BUDGET,
    LEAK,
    OTHER_LABEL,
    PROTECTED,
    UNDECIDED,
    Finding,
    latency_ratio,
    lint,
    lint_record,
    prompt_text,
)
from pld.models.fake import HashEmbedder
from pld.report import build as report_build
from pld.rulebook import Rulebook
from pld.rules import Instruction, InstructionSet
from pld.tasks.base import Example, Task, stratified_split
from tests.fakes import SCRIPTED_CFG, make_student, make_task, make_teacher

SENTENCES = {
    "complaint": [
        "My neighbour keeps shouting at the delivery driver every single morning.",
        "The landlord ignored three letters about the broken heating this winter.",
    ],
    "praise": [
        "The nurses on the night shift were patient and kind to my father.",
        "Our new bus route saves everyone twenty minutes on the way to work.",
    ],
    "question": [
        "Does the library open early on public holidays this year?",
        "How do I renew a parking permit once it has expired?",
    ],
}


def _task() -> Task:
    ex = [
        Example(f"{lab}-{i}", {"text": t}, lab)
        for lab, ts in SENTENCES.items()
        for i, t in enumerate(ts)
    ]
    return Task("feedback", "Classify the message.", tuple(SENTENCES), tuple(ex), "Message: {text}")


CLEAN = (
    Instruction(
        "R1",
        "grievance",
        "If the message reports a problem someone caused or ignored, the label is complaint.",
        ("complaint",),
    ),
    Instruction(
        "R2",
        "thanks",
        "When the message thanks a service or describes it favourably, the label is praise.",
        ("praise",),
    ),
    Instruction(
        "R3",
        "asks",
        "If the message asks how or whether something can be done, the label is question.",
        ("question",),
    ),
)


def _rb(*rules: Instruction) -> Rulebook:
    t = _task()
    return Rulebook.build(t, InstructionSet(rules or CLEAN), t.examples)


def _codes(found: list[Finding]) -> list[tuple[str, str | None]]:
    return [(f.code, f.rule_id) for f in found]


def test_a_clean_rulebook_has_no_findings() -> None:
    rb = _rb()
    assert lint(rb, list(_task().examples)) == []
    assert lint(rb, None) == []  # the rulebook's own saved training inputs


def test_a_rule_copying_a_training_sentence_is_a_leak_with_the_example_id() -> None:
    leaked = Instruction(
        "R4",
        "driver",
        "If a neighbour keeps shouting at the delivery driver every single morning, it is a "
        "complaint.",
        ("complaint",),
    )
    found = lint(_rb(*CLEAN, leaked), list(_task().examples))
    assert _codes(found) == [(LEAK, "R4")]
    ev = found[0].evidence
    assert ev["example_ids"] == ["complaint-0"] and ev["n_examples"] == 1
    assert ev["ngram"] in SENTENCES["complaint"][0].lower()
    assert len(ev["ngram"].split()) == ev["n"] == 6
    # the same from the saved inputs (examples_train.jsonl), as pld lint reads them
    assert _codes(lint(_rb(*CLEAN, leaked), None)) == [(LEAK, "R4")]


def test_a_rule_keyed_on_religion_is_reported_not_removed() -> None:
    rel = Instruction(
        "R4",
        "faith",
        "If the message mentions a mosque or Muslim neighbours, the label is complaint.",
        ("complaint",),
    )
    rb = _rb(*CLEAN, rel)
    found = lint(rb, None)
    assert _codes(found) == [(PROTECTED, "R4")]
    assert found[0].evidence["domains"] == ["religion"]
    assert found[0].evidence["terms"]["religion"] == ["mosque", "muslim"]
    assert "Muslim neighbours" in rb.system_prompt  # reported, never censored


def test_task_labels_that_are_protected_domains_are_named_in_the_finding() -> None:
    labels = ("gender", "profession", "race", "religion")
    t = Task("bias", "Which bias domain?", labels, (), "{text}")
    rules = InstructionSet(
        (
            Instruction(
                "R1",
                "jobs",
                "If the sentence describes a job or trade, it is profession.",
                ("profession",),
            ),
            Instruction(
                "R2",
                "worship",
                "If the sentence is about a church or a priest, it is religion.",
                ("religion",),
            ),
        )
    )
    found = [f for f in lint(Rulebook.build(t, rules), {}) if f.code == PROTECTED]
    assert _codes(found) == [(PROTECTED, "R2")]
    assert found[0].evidence["task_labels_in_domain"] == ["religion"]
    assert "expected here" in found[0].message


def test_an_over_budget_prompt_is_reported_with_how_it_was_counted() -> None:
    rb = _rb()
    est = math.ceil(len(prompt_text(rb)) / 4)
    assert lint(rb, None, budget_tokens=est) == []
    found = lint(rb, None, budget_tokens=est - 1)
    assert _codes(found) == [(BUDGET, None)]
    ev = found[0].evidence
    assert ev["tokens"] == est and ev["counted_with"] == "chars/4 estimate"
    assert ev["p50_latency_vs_zero_shot"] == round(latency_ratio(est), 2)
    # the student's tokenizer, when given, is what counts
    tok = lint(rb, None, budget_tokens=1500, count_tokens=lambda s: 4000)
    assert tok[0].evidence["tokens"] == 4000
    assert tok[0].evidence["counted_with"] == "student tokenizer"
    # between the 1,520- and 4,522-token points: 240 + 151 * 2480 / 3002 ms over 153 ms
    assert tok[0].evidence["p50_latency_vs_zero_shot"] == 2.38

    def down(s: str) -> int:
        raise BackendUnavailable("tokenizer unreachable")

    assert lint(rb, None, budget_tokens=est - 1, count_tokens=down)[0].evidence == ev


def test_latency_ratio_follows_the_benchmark_points() -> None:
    assert latency_ratio(75) == 1.0
    assert latency_ratio(1520) == pytest.approx(240 / 153)
    assert latency_ratio(537) < latency_ratio(1000) < latency_ratio(1520)


def test_a_label_no_rule_decides_is_reported() -> None:
    found = lint(_rb(*CLEAN[:2]), None)
    assert _codes(found) == [(UNDECIDED, None)]
    assert found[0].evidence["label"] == "question"


def test_a_rule_naming_another_label_is_reported() -> None:
    mixed = Instruction(
        "R2",
        "thanks",
        "When the message thanks a service and is not a complaint, the label is praise.",
        ("praise",),
    )
    found = lint(_rb(CLEAN[0], mixed, CLEAN[2]), None)
    assert _codes(found) == [(OTHER_LABEL, "R2")]
    assert found[0].evidence["named"] == ["complaint"]


def test_findings_round_trip_through_json() -> None:
    rec = lint_record(_rb(*CLEAN[:2]), None, budget_tokens=10)
    assert sorted(rec["codes"]) == [BUDGET, UNDECIDED]
    back = [Finding.from_json(json.loads(json.dumps(f))) for f in rec["findings"]]
    assert [f.to_json() for f in back] == rec["findings"]


# -- at the end of every fit -------------------------------------------------------------------
def _distiller(tmp_path: Path, **cfg: object) -> tuple[Distiller, Task, Task]:
    task = make_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    conf = SCRIPTED_CFG.with_overrides(calibrate=False, **cfg)
    d = Distiller(
        make_teacher(), make_student(), HashEmbedder(), config=conf, cache=tmp_path / "c.sqlite"
    )
    return d, task.with_examples(sp.train), task.with_examples(sp.val)


def test_every_fit_ends_with_the_lint_and_strict_fails_after_saving(tmp_path: Path) -> None:
    d, train, val = _distiller(tmp_path)
    run = tmp_path / "run"
    d.fit(train, val, run_dir=run)
    saved = json.loads((run / "lint.json").read_text())
    assert saved == dict(Rulebook.load(run).lint or {})
    assert json.loads((run / "run.json").read_text())["phases"]["lint"]["status"] == "done"
    assert [f.to_json() for f in d.lint_] == saved["findings"]
    assert saved["budget_tokens"] == 1500 and saved["counted_with"] == "chars/4 estimate"
    assert ("lint", "no findings (lint.json)") in summary_rows(d, str(run), 0.0)

    d, train, val = _distiller(tmp_path, lint_strict=True, lint_budget_tokens=10)
    with pytest.raises(LintFailed, match=r"strict lint: .*PLD-L003.*complete and saved") as e:
        d.fit(train, val, run_dir=tmp_path / "strict")
    assert [f.code for f in e.value.findings] == [BUDGET]  # type: ignore[attr-defined]
    strict = Rulebook.load(tmp_path / "strict")  # complete and saved before failing
    assert [f["code"] for f in (strict.lint or {})["findings"]] == [BUDGET]
    keys = [k for k, _ in summary_rows(d, str(tmp_path / "strict"), 0.0)]  # what the CLI shows
    assert "lint" in keys and f"WARNING {BUDGET}" in keys


def test_pld_lint_prints_findings_and_strict_exits_2(tmp_path: Path) -> None:
    leaked = Instruction(
        "R4",
        "driver",
        "Shouting at the delivery driver every single morning is a complaint.",
        ("complaint",),
    )
    run = _rb(*CLEAN, leaked).save(tmp_path / "run")
    r = CliRunner().invoke(main, ["lint", str(run)])
    assert r.exit_code == 0, r.output
    assert LEAK in r.output and "R4" in r.output
    r = CliRunner().invoke(main, ["lint", str(run), "--strict"])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["lint", str(run), "--json", "--budget-tokens", "5"])
    rec = json.loads(r.output)
    assert [f["code"] for f in rec["findings"]] == [LEAK, BUDGET]
    assert not (run / "lint.json").exists()  # pld lint only reads the run


def test_the_report_lists_the_lint_findings(tmp_path: Path) -> None:
    rb = _rb(*CLEAN[:2])
    run = rb.save(tmp_path / "run")
    page = report_build.build_report(run).read_text()
    assert "id='no-lint'" in page  # a run saved without lint.json says how to lint it
    linted = replace(rb, lint=lint_record(rb, None))
    run2 = linted.save(tmp_path / "run2")
    page = report_build.build_report(run2).read_text()
    assert "<table id='lint'>" in page and f"<td>{UNDECIDED}</td>" in page
    assert "no rule decides label &#x27;question&#x27;" in page
