"""Per-prediction rule citation (issue 14.1): one closed choice over the rule ids and ``none``
after an unchanged label call; strict parsing and an ``invalid`` outcome for backends without
constraints; ``rule`` in predictions JSONL only when cited; ``pld predict --cite`` and the
service's ``cited_rule``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pld.cli import main
from pld.metrics import citation_summary
from pld.models.base import Completion, GenOptions, Message, Usage
from pld.models.client import ChatClient
from pld.models.fake import Request, ScriptedChatModel
from pld.phases.classify import cite_options, classify_options, parse_rule
from pld.predictions import INVALID_RULE, NO_RULE, Prediction, as_items
from pld.rulebook import Rulebook
from pld.rules import InstructionSet
from pld.service import RunDirClassifier, create_app
from pld.tasks.base import render_template
from tests.fakes import (
    CITE_ASK,
    KEYWORDS,
    LogprobStudent,
    cite_reply,
    make_citing_student,
    make_student,
    make_task,
    student_reply,
)
from tests.service_support import save_run_dir, synthetic_rules

IDS = ("R1", "R2", "R3")


@pytest.mark.parametrize(
    ("reply", "want"),
    [
        ("2", "R2"),
        (" 3. ", "R3"),
        ("Rule 1", "R1"),
        ("number: 2", "R2"),
        ("R2", "R2"),
        (" [r2]. ", "R2"),
        ("Rule: R3", "R3"),
        ("rule id R1", "R1"),
        ('"none"', NO_RULE),
        ("None.", NO_RULE),
        ("4", INVALID_RULE),
        ("0", INVALID_RULE),
        ("R9", INVALID_RULE),
        ("2 because it mentions iron", INVALID_RULE),
        ("1, 2", INVALID_RULE),
        ("", INVALID_RULE),
    ],
)
def test_parse_rule_is_strict(reply: str, want: str) -> None:
    assert parse_rule(reply, IDS) == want


def test_cite_options_are_one_closed_choice_over_every_rule_and_none() -> None:
    opts = cite_options(IDS)
    assert opts.choices == ("1", "2", "3", "none") and opts.temperature == 0.0
    assert parse_rule("3", ("R7", "R2", "R12")) == "R12"  # by list number, not by id


def _items() -> list:  # type: ignore[type-arg]
    task = make_task(2)
    return [*task.examples, "nothing to see here"]


def test_predict_cite_names_the_rule_and_keeps_the_uncited_label_call() -> None:
    task = make_task(2)
    rb = Rulebook.build(task, synthetic_rules(), calibrate=False)
    plain_model = make_student()
    plain = rb.predict(_items(), plain_model)
    model = make_citing_student()
    cited = rb.predict(_items(), model, cite=True)
    assert [p.label for p in cited] == [p.label for p in plain]
    want = {"fruit": "R1", "metal": "R2", "animal": "R3"}
    assert [p.rule for p in cited] == [want[e.label] for e in task.examples] + [NO_RULE]
    assert all(p.rule is None for p in plain)
    # per item: the label call exactly as uncited, then one closed choice after the answer
    label_calls = [r for r in model.requests if not r.messages[-1].content.startswith(CITE_ASK)]
    cite_calls = [r for r in model.requests if r.messages[-1].content.startswith(CITE_ASK)]
    # the calibration probe comes first: one content-free question (this backend gives no
    # distribution, so the probe stops there and the citations are read as text)
    probe, cite_calls = cite_calls[0], cite_calls[1:]
    assert probe.messages[1].content == render_template(rb.user_template, {"text": "N/A"})
    assert [r.messages for r in label_calls] == [r.messages for r in plain_model.requests]
    assert all(r.options == classify_options(task.labels) for r in label_calls)
    assert len(cite_calls) == len(cited)
    asked = {r.messages[1].content: r.messages for r in label_calls}
    answer = {
        render_template(rb.user_template, it[1]): str(p.label)
        for it, p in zip(as_items(_items()), cited, strict=True)
    }
    for r in cite_calls:
        assert r.options.choices == ("1", "2", "3", "none")
        user = r.messages[1].content
        assert r.messages[:-2] == asked[user]  # the same conversation, continued
        assert r.messages[-2] == Message("assistant", answer[user])
    # what citing cost is counted in the item
    assert all(c.prompt_tokens > p.prompt_tokens for c, p in zip(cited, plain, strict=True))
    assert all(c.completion_tokens > p.completion_tokens for c, p in zip(cited, plain, strict=True))


async def test_citation_never_changes_a_calibrated_label_or_its_confidence() -> None:
    task = make_task(3)
    rb = Rulebook.build(task, synthetic_rules(), calibrate=True)
    items = as_items(_items())
    plain = await rb.apredict(items, ChatClient(LogprobStudent(), role="student"))
    cited = await rb.apredict(items, ChatClient(LogprobStudent(), role="student"), cite=True)
    assert all(p.scores is not None for p in plain)
    assert [(p.label, p.confidence, p.scores) for p in cited] == [
        (p.label, p.confidence, p.scores) for p in plain
    ]
    assert {p.rule for p in cited} == {"R1", "R2", "R3", NO_RULE}


def test_cite_after_plain_predict_reuses_the_cached_label_calls(tmp_path: Path) -> None:
    from pld.cache import Cache

    task = make_task(2)
    rb = Rulebook.build(task, synthetic_rules(), calibrate=False)
    cache = Cache(tmp_path / "c.sqlite")
    rb.predict(task.examples, make_student(), cache=cache)
    model = make_citing_student()
    rb.predict(task.examples, model, cache=cache, cite=True)
    assert all(r.messages[-1].content.startswith(CITE_ASK) for r in model.requests)
    again = make_citing_student()
    assert rb.predict(task.examples, again, cache=cache, cite=True)[0].rule == "R1"
    assert again.requests == []  # a rerun costs nothing


def _unconstrained(cite_text: str) -> ScriptedChatModel:
    """A backend that ignores the choice constraint when asked for a citation."""

    def reply(messages: Sequence[Message], options: GenOptions) -> str:
        if messages[-1].content.startswith(CITE_ASK):
            return cite_text
        return student_reply(messages, options)

    return ScriptedChatModel(reply)


def test_an_unconstrained_backend_gets_a_strict_parser_and_an_invalid_outcome() -> None:
    task = make_task(1)
    rb = Rulebook.build(task, synthetic_rules(), calibrate=False)
    bad = rb.predict(task.examples, _unconstrained("I think R2 applies here"), cite=True)
    assert [p.rule for p in bad] == [INVALID_RULE] * 3
    assert all(p.valid for p in bad)  # the label itself stays valid
    assert all("[cite] I think R2 applies here" in p.raw for p in bad)
    s = citation_summary(bad, {i.id: i.labels for i in synthetic_rules().instructions})
    assert (s["invalid"], s["cited"], s["none"], s["n"]) == (3, 0, 0, 3)
    ok = rb.predict(task.examples, _unconstrained("Rule: 2."), cite=True)
    assert [p.rule for p in ok] == ["R2"] * 3
    s = citation_summary(ok, {i.id: i.labels for i in synthetic_rules().instructions})
    assert s["by_rule"] == {"R1": 0, "R2": 3, "R3": 0}
    assert s["consistency"] == pytest.approx(1 / 3)  # only the metal item agrees with R2


def test_an_invalid_answer_has_an_invalid_citation_without_a_call() -> None:
    task = make_task(1)
    rb = Rulebook.build(task, synthetic_rules(), calibrate=False)
    model = ScriptedChatModel(["maybe"] * 4)
    preds = rb.predict(task.examples, model, cite=True)
    assert [(p.label, p.rule) for p in preds] == [(None, INVALID_RULE)] * 3
    # the one calibration probe (no distribution: it stops there), then three label calls
    assert len(model.requests) == 4
    assert sum(r.messages[-1].content.startswith(CITE_ASK) for r in model.requests) == 1


def test_a_prompt_without_rules_cites_none_without_a_call() -> None:
    task = make_task(1)
    rb = Rulebook.build(task, synthetic_rules(), calibrate=False)
    zero = replace(rb, system_prompt=Rulebook.build(task, InstructionSet(())).system_prompt)
    assert zero.cite_ids == () and rb.cite_ids == IDS
    model = make_citing_student()
    preds = zero.predict(task.examples, model, cite=True)
    assert [p.rule for p in preds] == [NO_RULE] * 3 and len(model.requests) == 3


def test_rule_is_serialised_only_when_cited_and_old_lines_load() -> None:
    p = Prediction("a", "fruit", "fruit", 0.9, 0.1, 10, 1, 0, False, "fruit")
    assert "rule" not in p.to_json()
    old = json.loads(json.dumps(p.to_json()))
    assert Prediction.from_json(old) == p and Prediction.from_json(old).rule is None
    c = replace(p, rule="R2")
    assert c.to_json()["rule"] == "R2" and Prediction.from_json(c.to_json()) == c
    assert c.cited and not replace(p, rule=NO_RULE).cited


def test_pld_predict_cite_writes_the_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pld.rulebook

    task = make_task(1)
    run = save_run_dir(tmp_path / "run", task, synthetic_rules())
    monkeypatch.setattr(pld.rulebook, "resolve_chat", lambda spec: LogprobStudent())
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        "".join(
            json.dumps({"id": e.id, **e.fields, "label": e.label}) + "\n" for e in task.examples
        )
    )
    args = ["predict", str(run), str(inputs), "--student", "fake:x", "--no-cache"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "p.jsonl"), "--cite"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["rule"] for x in rows] == ["R1", "R2", "R3"]
    assert "3 cite a rule, 0 none, 0 invalid citations" in r.output
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "q.jsonl")])
    assert r.exit_code == 0, r.output
    assert all(
        "rule" not in json.loads(x) for x in (tmp_path / "q.jsonl").read_text().split("\n")[:-1]
    )


async def test_service_started_with_cite_returns_the_cited_rule(tmp_path: Path) -> None:
    import httpx

    task = make_task(1)
    run = save_run_dir(tmp_path / "run", task, synthetic_rules())
    inputs = {"inputs": [dict(e.fields) for e in task.examples]}
    for cite, want in ((True, ["R1", "R2", "R3"]), (False, [None] * 3)):
        clf = RunDirClassifier(run, ChatClient(LogprobStudent(), role="student"), cite=cite)
        app = create_app(clf)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
                r = await c.post("/v1/classify", json=inputs)
        assert r.status_code == 200, r.text
        assert [x["cited_rule"] for x in r.json()["results"]] == want
        assert clf.info()["cites_rules"] is cite


def test_the_fake_cites_like_the_scripted_student_answers() -> None:
    """The double used above: it names the rule whose keyword the input holds."""
    rb = Rulebook.build(make_task(1), synthetic_rules())
    msgs = [
        Message("system", rb.system_prompt),
        Message("user", "Text: we saw iron pie"),
        Message("assistant", "metal"),
        Message("user", CITE_ASK + " ..."),
    ]
    assert cite_reply(msgs, cite_options(IDS)) == "2"


@pytest.mark.parametrize("layout", ["default", "fields", "rules_after_input", "weigh_all"])
def test_cite_ids_follow_the_list_the_student_is_shown(layout: str) -> None:
    from pld.phases.layouts import render_layout
    from pld.rules import Instruction

    task = make_task(1)
    rules = InstructionSet(
        tuple(
            Instruction(rid, "t", f"If it mentions {kw}, the label is {lab}.", (lab,))
            for rid, (lab, kw) in zip(("R7", "R2", "R12"), KEYWORDS.items(), strict=True)
        )
    )
    prompt = render_layout(layout, task, rules)
    rb = replace(
        Rulebook.build(task, rules, calibrate=False),
        system_prompt=prompt.system,
        user_template=prompt.user_template,
    )
    assert rb.cite_ids == ("R7", "R2", "R12")
    preds = rb.predict(task.examples, make_citing_student(), cite=True)
    assert [p.rule for p in preds] == ["R7", "R2", "R12"]


class FirstNumberBiased(LogprobStudent):
    """Labels as ``LogprobStudent``; citations with a distribution that leans hard on list
    number 1 whatever the input (as SmolLM2 does), plus a smaller bump on the right rule."""

    async def complete(self, messages: Sequence[Message], options: GenOptions) -> Completion:
        if not messages[-1].content.startswith(CITE_ASK):
            return await super().complete(messages, options)
        self.requests.append(Request(tuple(messages), options))
        assert options.choices is not None
        right = cite_reply(messages, options)
        w = {c: (5.0 if c == "1" else 1.0) + (2.0 if c == right else 0.0) for c in options.choices}
        total = sum(w.values())
        lp = {c: math.log(x / total) for c, x in w.items()}
        return Completion(
            text=max(lp, key=lambda c: lp[c]),
            finish_reason="stop",
            usage=Usage(10, 1),
            latency_s=0.0,
            choice_logprobs=lp,
            model=self.identity,
        )


async def test_the_citation_is_calibrated_against_the_first_number_bias() -> None:
    """Uncalibrated, this student cites R1 for everything (its greedy choice); the content-free
    prior per answer label removes the position bias and the right rule wins."""
    task = make_task(2)
    rb = Rulebook.build(task, synthetic_rules(), calibrate=False)
    model = FirstNumberBiased()
    cited = await rb.apredict(as_items(task.examples), ChatClient(model, role="student"), cite=True)
    want = {"fruit": "R1", "metal": "R2", "animal": "R3"}
    assert [p.rule for p in cited] == [want[e.label] for e in task.examples]
    # the greedy text alone says "1" for every item: the prior is what moved it
    items = {render_template(rb.user_template, e.fields) for e in task.examples}
    item_cites = [
        r
        for r in model.requests
        if r.messages[-1].content.startswith(CITE_ASK) and r.messages[1].content in items
    ]
    assert all(r.messages[-1].content for r in item_cites)
    assert len(item_cites) == len(task.examples)
    probes = [r for r in model.requests if r.messages[-1].content.startswith(CITE_ASK)]
    assert len(probes) - len(item_cites) == len(task.labels) * 3  # labels x content-free inputs


async def test_the_service_measures_the_citation_prior_once_not_per_batch(tmp_path: Path) -> None:
    import httpx

    task = make_task(1)
    run = save_run_dir(tmp_path / "run", task, synthetic_rules())
    model = FirstNumberBiased()
    clf = RunDirClassifier(run, ChatClient(model, role="student"), cite=True)
    app = create_app(clf)
    items = {render_template("Text: {text}", e.fields) for e in task.examples}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
            for e in task.examples:  # three separate requests, three batches
                r = await c.post("/v1/classify", json={"inputs": [dict(e.fields)]})
                assert r.status_code == 200, r.text
    cites = [r for r in model.requests if r.messages[-1].content.startswith(CITE_ASK)]
    probes = [r for r in cites if r.messages[1].content not in items]
    assert len(probes) == len(task.labels) * 3  # at warm-up, once
    assert len(cites) - len(probes) == len(task.examples)
