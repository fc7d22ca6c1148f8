"""Issue #13: the fitted decision (layout x calibration on validation), the zero-shot decision,
the harm guard, paired resolve acceptance and the paired bootstrap."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from pld.config import DistillConfig
from pld.decide import DecideSettings, apply_prior, decide
from pld.distiller import Distiller
from pld.errors import ConfigError
from pld.evaluate import acompare, compare
from pld.metrics import _resampled_macro_f1, macro_f1, paired_bootstrap_diff, paired_text
from pld.models.base import Completion, GenOptions, Message, Usage
from pld.models.client import ChatClient
from pld.models.fake import HashEmbedder, Request, ScriptedChatModel
from pld.phases.classify import classify
from pld.phases.layouts import LAYOUTS, render_layout
from pld.phases.resolve import ResolveSettings, accepts, paired_gain, resolve
from pld.predictions import Prediction
from pld.prompts import system_prompt_for
from pld.rulebook import Rulebook
from pld.rules import Instruction, InstructionSet
from pld.tasks.base import Task, stratified_split
from tests.fakes import KEYWORDS, make_student, make_task, make_teacher, teacher_reply

Weights = Callable[[str, str, Sequence[str]], Mapping[str, float]]


class DistStudent:
    """A student whose label distribution is a function of (system prompt, user turn)."""

    def __init__(self, weights: Weights, name: str = "dist") -> None:
        self.weights = weights
        self.name = name
        self.requests: list[Request] = []

    @property
    def identity(self) -> str:
        return f"fake:{self.name}"

    async def complete(self, messages: Sequence[Message], options: GenOptions) -> Completion:
        self.requests.append(Request(tuple(messages), options))
        assert options.choices is not None
        w = self.weights(messages[0].content, messages[-1].content, options.choices)
        total = sum(w.values())
        lp = {lab: math.log(w[lab] / total) for lab in options.choices}
        return Completion(
            text=max(options.choices, key=lambda lab: lp[lab]),
            finish_reason="stop",
            usage=Usage(10, 1),
            latency_s=0.0,
            choice_logprobs=lp,
            model=self.identity,
        )


def _gold(user: str) -> str | None:
    return next((lab for lab, kw in KEYWORDS.items() if kw in user), None)


RULES = InstructionSet(
    tuple(
        Instruction(f"R{k}", f"{lab} topic", f"If the text mentions {kw}, {lab}.", (lab,))
        for k, (lab, kw) in enumerate(KEYWORDS.items(), 1)
    )
)
SETTINGS = DecideSettings(layouts=LAYOUTS, calibrate=True, confidence=0.9, if_worse="warn", seed=0)


def _rulebook(task: Task) -> Rulebook:
    return Rulebook.build(task, RULES, calibrate=True, models={"student": "fake:dist"})


async def _decide(weights: Weights, settings: DecideSettings = SETTINGS) -> Rulebook:
    task = make_task(6)
    client = ChatClient(DistStudent(weights), role="student")
    return await decide(_rulebook(task), list(task.examples), client, settings)


# -- layouts -------------------------------------------------------------------------------


def test_default_layout_is_byte_identical_to_the_rulebook_prompt() -> None:
    task = make_task(3)
    p = render_layout("default", task, RULES)
    assert p.system == system_prompt_for(task, RULES) and p.user_template == task.input_template
    assert render_layout("default", task, None).system == system_prompt_for(task, None)
    prompts = {render_layout(x, task, RULES) for x in LAYOUTS}
    assert len(prompts) == len(LAYOUTS)  # every layout is a different prompt
    fields = render_layout("fields", task, RULES)
    assert (
        "[[ ## label ## ]]" in fields.system and "[[ ## text ## ]]\n{text}" in fields.user_template
    )
    after = render_layout("rules_after_input", task, RULES)
    assert "Decision rules" not in after.system and "Decision rules" in after.user_template


def test_rule_braces_never_become_template_fields() -> None:
    task = make_task(3)
    rules = InstructionSet(
        (Instruction("R1", "t", "If the text has {curly} words, fruit.", ("fruit",)),)
    )
    p = render_layout("rules_after_input", task, rules)
    assert "{curly}" not in p.user_template and "(curly)" in p.user_template


def test_unknown_layouts_and_guard_actions_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="decide_layouts"):
        DistillConfig(decide_layouts=("default", "sideways"))
    with pytest.raises(ConfigError, match="if_worse_than_zero_shot"):
        DistillConfig(if_worse_than_zero_shot="panic")
    assert DistillConfig.from_dict({"decide_layouts": ["fields"]}).decide_layouts == ("fields",)


# -- the fitted decision -----------------------------------------------------------------


def test_apply_prior_matches_classify_with_the_prior() -> None:
    task = make_task(4)

    def w(system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
        g = _gold(user)
        return {
            lab: (3.0 if lab == g else 1.0) + (2.0 if lab == "fruit" else 0.0) for lab in labels
        }

    client = ChatClient(DistStudent(w), role="student")
    items = [(e.id, e.fields, e.label) for e in task.examples]
    prior = {"fruit": 0.6, "metal": 0.25, "animal": 0.15}
    kw = dict(system_prompt="s", user_template="{text}", labels=task.labels, student=client)
    raw = asyncio.run(classify(items, calibrate=False, **kw))  # type: ignore[arg-type]
    cal = asyncio.run(classify(items, prior=prior, **kw))  # type: ignore[arg-type]
    again = [apply_prior(p, prior, task.labels) for p in raw]
    assert [p.label for p in again] == [p.label for p in cal]
    assert all(
        abs(a.scores[k] - b.scores[k]) < 1e-12  # type: ignore[index]
        for a, b in zip(again, cal, strict=True)
        for k in task.labels
    )


def _calibration_hurts(system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
    """Raw argmax is right; the content-free prior leans hard to fruit, so dividing by it
    sends every fruit item to metal."""
    g = _gold(user)
    if g is None:
        return {"fruit": 10.0, "metal": 1.0, "animal": 1.0}
    if g == "fruit":
        return {"fruit": 2.0, "metal": 1.5, "animal": 1.0}
    return {lab: 2.0 if lab == g else 1.0 for lab in labels}


async def test_a_student_whose_calibrated_scores_are_worse_gets_raw_scores() -> None:
    rb = await _decide(_calibration_hurts)
    d = rb.decision
    assert d is not None and d["calibrate"] is False and rb.calibrate is False
    assert d["layout"] == "default"  # every layout is equally good: ties go to the default
    scores = d["scores"]
    assert scores["default, raw"] == 1.0 and scores["default, calibrated"] < 0.7
    assert "better in" in d["reason"] and d["default"] == {"layout": "default", "calibrate": True}
    assert {(c["layout"], c["calibrate"]) for c in d["candidates"]} == {
        (x, c) for x in LAYOUTS for c in (True, False)
    }


async def test_equal_candidates_keep_the_default() -> None:
    def same(system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
        g = _gold(user)
        return {lab: 2.0 if lab == g else 1.0 for lab in labels}

    rb = await _decide(same)
    assert rb.decision is not None
    assert (rb.decision["layout"], rb.decision["calibrate"]) == ("default", True)
    assert "scored highest or tied" in rb.decision["reason"]
    assert rb.system_prompt == system_prompt_for(rb.task, RULES)


def _fields_only(system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
    """Right only when asked in DSPy's field format (with rules); else the first label."""
    g = _gold(user)
    good = "[[ ## label ## ]]" in system and "Decision rules" in system
    return {lab: (3.0 if (lab == g if good else lab == labels[0]) else 1.0) for lab in labels}


def test_a_better_layout_is_chosen_saved_and_used_by_rulebook_load(tmp_path: Path) -> None:
    rb = asyncio.run(_decide(_fields_only))
    assert rb.decision is not None and rb.decision["layout"] == "fields"
    want = render_layout("fields", rb.task, RULES)
    assert (rb.system_prompt, rb.user_template) == (want.system, want.user_template)
    rb.save(tmp_path / "rb")
    assert (tmp_path / "rb" / "system_prompt.txt").read_text() == want.system
    assert (tmp_path / "rb" / "user_template.txt").read_text() == want.user_template
    saved = json.loads((tmp_path / "rb" / "decision.json").read_text())
    assert saved["layout"] == "fields" and saved["reason"] and saved["candidates"]

    loaded = Rulebook.load(tmp_path / "rb")
    assert loaded.decision == saved and loaded.calibrate == saved["used"]["calibrate"]
    student = DistStudent(_fields_only)
    preds = loaded.predict(list(make_task(3).examples), student)
    assert all(p.correct for p in preds)
    sent = student.requests[-1].messages
    assert sent[0].content == want.system and sent[-1].content.startswith("[[ ## text ## ]]\n")


def test_predictions_val_are_those_of_the_kept_layout(tmp_path: Path) -> None:
    """A fit whose decision keeps another layout than the resolve stage scored: the run's
    predictions_val.jsonl (and ``val_predictions_``) must be that layout's answers, the ones
    ``pld predict`` gives — not the resolve stage's default-layout answers (the e2e test
    caught the stale file when the real student's decision moved to ``weigh_all``)."""
    task = make_task(6)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    train, val = task.with_examples(sp.train), task.with_examples(sp.val)
    cfg = DistillConfig(min_samples=3, eps=0.3, max_rounds=0, decide_layouts=("fields",))
    d = Distiller(make_teacher(), DistStudent(_fields_only), HashEmbedder(), config=cfg).fit(
        train, val, run_dir=tmp_path / "run"
    )
    assert d.rulebook_.decision is not None and d.rulebook_.decision["used"]["layout"] == "fields"
    saved = [
        json.loads(x) for x in (tmp_path / "run" / "predictions_val.jsonl").read_text().splitlines()
    ]
    again = Rulebook.load(tmp_path / "run").predict(list(val.examples), DistStudent(_fields_only))
    assert [(p["id"], p["label"]) for p in saved] == [(p.id, p.label) for p in again]
    assert all(p["label"] == p["gold"] for p in saved)  # the default layout gets these wrong
    assert [p.label for p in d.val_predictions_] == [p["label"] for p in saved]


# -- the harm guard ----------------------------------------------------------------------


def _rules_confuse(system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
    """Right zero-shot; any prompt carrying the rules sends everything to the first label."""
    g = _gold(user)
    confused = "Decision rules" in system or "Decision rules" in user
    return {lab: (3.0 if lab == (labels[0] if confused else g) else 1.0) for lab in labels}


async def test_the_guard_says_so_when_the_rulebook_is_worse_than_zero_shot() -> None:
    rb = await _decide(_rules_confuse)
    assert rb.warning is not None
    assert rb.warning.startswith(
        "On the validation split the rulebook is not better than the student's zero-shot "
        "prompt: macro-F1 0.167 with the rulebook vs 1.000 zero-shot (default, calibrated;"
    )
    assert rb.decision is not None and rb.decision["used"]["prompt"] == "rulebook"
    assert "Decision rules" in rb.system_prompt  # "warn" keeps the rulebook


def test_fallback_keeps_the_zero_shot_prompt(tmp_path: Path) -> None:
    settings = DecideSettings(LAYOUTS, calibrate=True, confidence=0.9, if_worse="fallback")
    rb = asyncio.run(_decide(_rules_confuse, settings))
    assert rb.decision is not None and rb.decision["guard"]["fallback"] is True
    zs = rb.decision["zero_shot"]
    assert rb.system_prompt == render_layout(zs["layout"], rb.task, None).system
    assert rb.decision["used"] == {
        "prompt": "zero-shot (fallback)",
        "layout": zs["layout"],
        "calibrate": zs["calibrate"],
    }
    rb.save(tmp_path / "rb")
    preds = Rulebook.load(tmp_path / "rb").predict(
        list(make_task(3).examples), DistStudent(_rules_confuse)
    )
    assert all(p.correct for p in preds)


def _rules_help(system: str, user: str, labels: Sequence[str]) -> dict[str, float]:
    g = _gold(user)
    ok = "Decision rules" in system or "Decision rules" in user
    return {lab: (3.0 if lab == (g if ok else labels[0]) else 1.0) for lab in labels}


async def test_no_sentence_when_the_rulebook_is_better() -> None:
    rb = await _decide(_rules_help)
    assert rb.warning is None and rb.decision is not None
    assert rb.decision["guard"]["better"] is True


def test_a_run_without_a_decision_has_no_warning() -> None:
    rb = Rulebook.build(make_task(2), RULES)
    assert rb.decision is None and rb.warning is None and rb.zero_shot_decision is None


# -- evaluation: fitted zero-shot, paired CIs --------------------------------------------


async def test_compare_uses_the_fitted_zero_shot_decision_and_reports_paired_cis() -> None:
    rb = await _decide(_calibration_hurts)
    task = make_task(6)
    c = await acompare(
        ["zero-shot", "pld"],
        task,
        list(task.examples),
        DistStudent(_calibration_hurts),
        rulebook=rb,
    )
    zs = c.methods["zero-shot"]["decision"]
    assert zs["calibrate"] is False and zs["source"] == "the rulebook's validation split"
    dv = c.methods["zero-shot"]["diff_vs_pld"]
    assert dv["n"] == len(task.examples) and len(dv["ci95"]) == 2
    assert "mcnemar_vs_pld" in c.methods["zero-shot"]


def test_compare_fits_the_zero_shot_decision_on_validation_without_a_rulebook() -> None:
    task = make_task(6)
    c = compare(
        ["zero-shot"],
        task,
        list(task.examples[::2]),
        DistStudent(_calibration_hurts),
        val=list(task.examples[1::2]),
    )
    d = c.methods["zero-shot"]["decision"]
    assert d["calibrate"] is False and d["source"] == "fitted on 9 validation items"
    c2 = compare(["zero-shot"], task, list(task.examples[::2]), DistStudent(_calibration_hurts))
    assert c2.methods["zero-shot"]["decision"]["source"].startswith("default")


# -- paired bootstrap ----------------------------------------------------------------------


def _P(i: int, label: str | None, gold: str) -> Prediction:
    return Prediction(str(i), label, label or "?", None, 0.0, 1, 1, 0, False, gold)


def test_paired_bootstrap_identical_predictions_give_zero() -> None:
    a = [_P(i, "x" if i % 3 else "y", "x" if i % 2 else "y") for i in range(40)]
    r = paired_bootstrap_diff(a, list(a), ["x", "y"])
    assert r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0] and r["p_a_better"] == 0.0


def test_paired_bootstrap_a_clearly_better_method_excludes_zero() -> None:
    gold = ["x" if i % 2 else "y" for i in range(60)]
    good = [_P(i, g if i % 10 else "x", g) for i, g in enumerate(gold)]
    bad = [_P(i, "x" if i % 3 else g, g) for i, g in enumerate(gold)]
    r = paired_bootstrap_diff(good, bad, ["x", "y"], seed=3)
    assert r["diff"] == pytest.approx(macro_f1(good, ["x", "y"]) - macro_f1(bad, ["x", "y"]))
    assert r["ci95"][0] > 0 and r["p_a_better"] > 0.99
    assert r == paired_bootstrap_diff(good, bad, ["x", "y"], seed=3)  # seeded
    flipped = paired_bootstrap_diff(bad, good, ["x", "y"], seed=3)
    assert flipped["ci95"][1] < 0


def test_paired_permutation_p_matches_exact_enumeration() -> None:
    """The approximate-randomization p against the exact one: every one of the 2^m ways of
    swapping the m items on which the two methods answer differently."""
    labels = ["x", "y", "z"]
    gold = ["x", "y", "z", "x", "y", "z", "x", "y", "z", "x", "y", "z"]
    ans_a = ["x", "y", "z", "x", "y", "x", "x", None, "z", "y", "y", "z"]
    ans_b = ["x", "x", "x", "z", "y", "x", "y", "y", "x", "y", "z", "z"]
    a = [_P(i, lab, g) for i, (lab, g) in enumerate(zip(ans_a, gold, strict=True))]
    b = [_P(i, lab, g) for i, (lab, g) in enumerate(zip(ans_b, gold, strict=True))]
    differ = [i for i in range(len(gold)) if ans_a[i] != ans_b[i]]
    obs = abs(macro_f1(a, labels) - macro_f1(b, labels))
    hits = 0
    for mask in itertools.product([False, True], repeat=len(differ)):
        sa, sb = list(a), list(b)
        for i, sw in zip(differ, mask, strict=True):
            if sw:
                sa[i], sb[i] = b[i], a[i]
        hits += abs(macro_f1(sa, labels) - macro_f1(sb, labels)) >= obs - 1e-12
    exact = hits / 2 ** len(differ)
    r = paired_bootstrap_diff(a, b, labels, seed=1)
    assert 0.01 < exact < 0.5  # a case where the test matters
    assert r["p_permutation"] == pytest.approx(exact, abs=0.01)
    assert paired_bootstrap_diff(a, list(a), labels)["p_permutation"] == 1.0  # no difference
    assert paired_bootstrap_diff(a, b, labels, permutations=0)["p_permutation"] is None
    gold2 = ["x" if i % 2 else "y" for i in range(60)]
    good = [_P(i, g, g) for i, g in enumerate(gold2)]
    bad = [_P(i, "x" if i % 3 else g, g) for i, g in enumerate(gold2)]
    clear = paired_bootstrap_diff(good, bad, ["x", "y"])
    assert clear["p_permutation"] < 0.001
    # one cell: the floor of the estimate is said as a bound, not as a value
    assert paired_text(clear).endswith(", p ≤ 0.0001") and paired_text(r).endswith(
        f", p = {r['p_permutation']:.2g}"
    )
    assert "p" not in paired_text({"diff": 0.1, "ci95": [0.0, 0.2]})  # an older record


def test_resampled_macro_f1_matches_macro_f1_with_invalid_answers() -> None:
    labels = ["x", "y", "z"]
    preds = [_P(0, "x", "x"), _P(1, None, "y"), _P(2, "y", "y"), _P(3, "x", "z"), _P(4, "z", "x")]
    code = {lab: k for k, lab in enumerate(labels)}
    gold = np.array([code[p.gold] for p in preds])  # type: ignore[index]
    pred = np.array([code.get(p.label or "", 3) for p in preds])
    rng = np.random.default_rng(0)
    idx = np.vstack([np.arange(5), rng.integers(0, 5, size=(20, 5))])
    got = _resampled_macro_f1(gold, pred, idx, 3)
    for row, v in zip(idx, got, strict=True):
        assert v == pytest.approx(macro_f1([preds[i] for i in row], labels))


# -- paired acceptance in resolve ----------------------------------------------------------


def test_paired_acceptance_rejects_a_tie_and_accepts_a_net_gain() -> None:
    best = [_P(i, "x" if i < 5 else "y", "x") for i in range(10)]
    tie = [_P(i, "x" if 1 <= i < 6 else "y", "x") for i in range(10)]  # fixes 1, breaks 1
    gain = paired_gain(best, tie)
    assert gain == {"fixes": 1, "breaks": 1, "net": 0}
    assert not accepts(gain, 0.5, 0.5, 2) and not accepts(gain, 0.5, 0.5, 0)
    better = [_P(i, "x" if i < 8 else "y", "x") for i in range(10)]  # fixes 3
    g2 = paired_gain(best, better)
    assert g2["net"] == 3 and accepts(g2, 0.6, 0.5, 2)
    assert not accepts(g2, 0.4, 0.5, 2)  # net gain but a lower pool macro-F1
    assert not accepts({"fixes": 2, "breaks": 1, "net": 1}, 0.6, 0.5, 2)  # below the margin


def _seeded_teacher(
    edits_by_candidate: Mapping[int, Sequence[Mapping[str, object]]],
) -> ScriptedChatModel:
    """A teacher whose resolve edits depend on which candidate asks (GenOptions.seed =
    round * 100 + 10 * candidate), not on call order."""

    def reply(messages: Sequence[Message], options: GenOptions) -> str:
        if "got these inputs WRONG" in messages[1].content:
            c = ((options.seed or 0) % 100) // 10
            return json.dumps(
                {"diagnosis": f"candidate {c}", "edits": edits_by_candidate.get(c, [])}
            )
        return teacher_reply(messages, options, state={}, resolve_edits=[])

    return ScriptedChatModel(reply, name="teacher")


OTTER = {
    "op": "add",
    "topic": "otters",
    "text": "If the text talks about otter things, animal.",
    "labels": ["animal"],
}
NOISE = {
    "op": "add",
    "topic": "noise",
    "text": "If the text talks about stew things, metal.",
    "labels": ["metal"],
}


async def test_resolve_picks_the_candidate_that_fixes_more_and_records_what_it_bought() -> None:
    task = make_task(10)
    start = InstructionSet(
        (
            Instruction("R1", "fruit", "If apple things, fruit.", ("fruit",)),
            Instruction("R2", "metal", "If iron things, metal.", ("metal",)),
        )
    )
    teacher = _seeded_teacher({0: [NOISE], 1: [OTTER]})
    best, rounds, preds = await resolve(
        task,
        start,
        task.examples[::2],
        task.examples[1::2],
        ChatClient(make_student(), role="student"),
        ChatClient(teacher, role="teacher"),
        ResolveSettings(max_rounds=1, train_sample=8, candidates=2, pool=6, min_net=2),
    )
    r1 = rounds[1]
    assert r1["accepted"] and r1["chosen_candidate"] == 1
    assert [c["candidate"] for c in r1["candidates"]] == [0, 1]
    c0, c1 = r1["candidates"]
    assert c0["accepted"] is False and c1["accepted"] is True and c1["net"] > c0["net"]
    assert r1["bought"]["fixes"] == c1["fixes"] and r1["bought"]["val_macro_f1"][1] == 1.0
    assert r1["bought"]["changed"][0]["edit"]["topic"] == "otters"
    shown = set(c0["failures_shown"] + c0["successes_shown"] + c1["failures_shown"])
    shown |= set(c1["successes_shown"])
    pool_ids = r1["pool"]["train_ids"]
    assert len(pool_ids) == r1["pool"]["train"] <= 6 and not shown & set(pool_ids)
    assert not set(pool_ids) & {e.id for e in task.examples[1::2]}
    assert best.get("R3") is not None and all(p.correct for p in preds)


async def test_the_first_candidates_request_is_the_one_candidate_loops(tmp_path: Path) -> None:
    task = make_task(6)
    start = InstructionSet((Instruction("R1", "fruit", "If apple things, fruit.", ("fruit",)),))
    sent = []
    for n in (1, 3):
        teacher = _seeded_teacher({})
        await resolve(
            task,
            start,
            task.examples[::2],
            task.examples[1::2],
            ChatClient(make_student(), role="student"),
            ChatClient(teacher, role="teacher"),
            ResolveSettings(max_rounds=1, train_sample=9, candidates=n, pool=0),
        )
        sent.append(teacher.requests)
    first = sent[0][0]
    assert len(sent[0]) == 1 and len(sent[1]) == 3
    assert first.messages == sent[1][0].messages and first.options == min(
        (r.options for r in sent[1]), key=lambda o: o.seed or 0
    )
    assert len({r.messages[1].content for r in sent[1]}) > 1  # different failure samples


def test_the_summary_and_the_report_say_it_in_one_sentence(tmp_path: Path) -> None:
    import html

    from pld.cli.distill import decision_rows
    from pld.report.build import build_report

    rb = asyncio.run(_decide(_rules_confuse))
    rows = dict(decision_rows(rb))
    assert rows["WARNING"] == f"{rb.warning} (the rulebook is kept)"
    assert rows["decision"].startswith("layout default, calibrated (val macro-F1 0.167")
    rb.save(tmp_path / "rb")
    page = html.unescape(build_report(tmp_path / "rb").read_text())
    assert f"<p id='harm-guard'><b>Warning:</b> {rb.warning}</p>" in page
    assert "id='decision-candidates'" in page
    md = (tmp_path / "rb" / "report" / "report.md").read_text()
    assert f"**Warning:** {rb.warning}" in md
    fine = asyncio.run(_decide(_rules_help))
    assert "WARNING" not in dict(decision_rows(fine))


@pytest.mark.parametrize("choose", [None, 0.9])
async def test_resolve_judges_under_the_calibration_decide_would_pick(
    choose: float | None,
) -> None:
    """Calibration sends every fruit item to metal with this student; raw scores are right.
    With the choice on, the loop reads raw scores (and finds nothing to repair); without it,
    it learns from failures that only the calibrated reading has."""
    task = make_task(12)
    teacher = _seeded_teacher({})
    _, rounds, preds = await resolve(
        task,
        RULES,
        task.examples[::2],
        task.examples[1::2],
        ChatClient(DistStudent(_calibration_hurts), role="student"),
        ChatClient(teacher, role="teacher"),
        ResolveSettings(max_rounds=1, train_sample=6, candidates=1, choose_calibration=choose),
    )
    if choose is None:
        assert "scoring" not in rounds[0] and rounds[1]["train_failures"] > 0
        assert len(teacher.requests) == 1
        return
    scoring = rounds[0]["scoring"]
    assert scoring["calibrate"] is False and "better in" in scoring["reason"]
    assert scoring["scores"]["default, raw"] == 1.0 > scoring["scores"]["default, calibrated"]
    assert rounds[0]["val_macro_f1"] == 1.0 and all(p.correct for p in preds)
    assert rounds[1]["train_failures"] == 0 and teacher.requests == []
