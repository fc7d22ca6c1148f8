"""``pld audit`` (issue 14.2) with a rule-following scripted student: leave-one-rule-out
fixed/broken counts, removal candidates, overlap and label-mention flags, audit.json, the
cache (a rerun costs nothing), the CLI and the report's per-rule table."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from pld.audit import AUDIT_FILE, audit, audit_data, load_audit, save_audit, without
from pld.cache import Cache
from pld.cli import main
from pld.errors import ConfigError, RunDirError
from pld.models.base import GenOptions, Message
from pld.models.client import ChatClient
from pld.models.fake import HashEmbedder, ScriptedChatModel
from pld.overlap import cosine_matrix, jaccard_matrix, names_other_labels
from pld.report import build_report
from pld.rulebook import Rulebook
from pld.rules import Instruction, InstructionSet
from pld.tasks.base import Example
from tests.fakes import CITE_ASK, make_task

_LINE = re.compile(r"^(\d+)\. \[\w+\] [^:]*? -> ([\w, ]+): (.*)$")


def _fires(rule_text: str, user: str) -> bool:
    words = set(re.findall(r"[a-z]+", user.lower().removeprefix("text:")))
    return any(len(w) >= 4 and w in words for w in re.findall(r"[a-z]+", rule_text.lower()))


def follower_reply(messages: Sequence[Message], options: GenOptions) -> str:
    """A student that follows its rules: the first rule (in prompt order) one of whose words
    (4+ letters) the input contains decides, and is what it cites (by its list number); else
    the first label."""
    user = messages[1].content
    for line in messages[0].content.splitlines():
        m = _LINE.match(line)
        if m and _fires(m.group(3), user):
            if messages[-1].content.startswith(CITE_ASK):
                return m.group(1)
            return m.group(2).split(",")[0]
    assert options.choices is not None
    return "none" if messages[-1].content.startswith(CITE_ASK) else options.choices[0]


def follower() -> ScriptedChatModel:
    return ScriptedChatModel(follower_reply, name="follower")


def _rule(rid: str, label: str, text: str, sources: tuple[str, ...] = ()) -> Instruction:
    return Instruction(rid, f"{label} topic", text, (label,), sources, ("round 1: add",))


RULES = InstructionSet(
    (
        _rule("R5", "metal", "If the text mentions stew or cake, the label is metal."),
        _rule("R1", "fruit", "If the text talks about apple things, the label is fruit."),
        _rule("R2", "metal", "If the text talks about iron things, the label is metal.", ("m-1",)),
        _rule("R3", "animal", "If the text talks about otter things, the label is animal."),
        _rule(
            "R4", "metal", "If the text talks about otter things and not fruit, the label is metal."
        ),
    ),
    version=3,
)


def _val() -> list[Example]:
    return list(make_task(4).examples)  # i = 1, 2 are stew and cake


def _run() -> tuple[Rulebook, dict, ScriptedChatModel]:  # type: ignore[type-arg]
    rb = Rulebook.build(make_task(4), RULES, calibrate=False)
    model = follower()
    rec = audit(rb, _val(), ChatClient(model, role="student"))
    return rb, rec, model


def test_leave_one_rule_out_counts_the_items_each_rule_fixes_and_breaks() -> None:
    _, rec, model = _run()
    rows = {r["id"]: r for r in rec["rules"]}
    assert [r["id"] for r in rec["rules"]] == ["R5", "R1", "R2", "R3", "R4"]
    assert rec["full"]["accuracy"] == pytest.approx(8 / 12)
    # R5 sends every stew/cake item to metal: it breaks the fruit and animal ones
    assert rows["R5"]["fixed"] == []
    assert sorted(rows["R5"]["broken"]) == ["animal-01", "animal-02", "fruit-01", "fruit-02"]
    assert rows["R5"]["delta_macro_f1"] < 0 and rows["R5"]["mcnemar_p"] == pytest.approx(0.125)
    assert rows["R5"]["flags"] == ["no_gain"] and rows["R5"]["removal_candidate"]
    # R2 and R3 decide the items no other rule reaches
    assert rows["R2"]["fixed"] == ["metal-00", "metal-03"] and rows["R2"]["broken"] == []
    assert rows["R3"]["fixed"] == ["animal-00", "animal-03"]
    assert rows["R2"]["delta_macro_f1"] > 0 and not rows["R2"]["removal_candidate"]
    assert rows["R2"]["mcnemar_p"] == pytest.approx(0.5)
    # R1 agrees with the student's prior; R4 is shadowed by R3: removing either changes nothing
    for rid in ("R1", "R4"):
        assert rows[rid]["flags"] == ["no_effect"] and rows[rid]["changed"] == 0
        assert rows[rid]["delta_macro_f1"] == 0.0
    # the ablated prompts really lack the rule (and only it)
    systems = {r.messages[0].content for r in model.requests}
    assert len(systems) == 1 + len(RULES)
    assert rows["R2"]["provenance"] == {
        "n_sources": 1,
        "sources": ["m-1"],
        "history": ["round 1: add"],
    }


def test_citations_are_counted_per_rule_and_feed_the_overlap_flags() -> None:
    _, rec, _ = _run()
    rows = {r["id"]: r for r in rec["rules"]}
    assert {k: rows[k]["cited"] for k in rows} == {"R5": 6, "R1": 2, "R2": 2, "R3": 2, "R4": 0}
    assert rec["full"]["citation"]["consistency"] == 1.0
    pairs = {tuple(c["rules"]): c for c in rec["conflicts"]}
    assert set(pairs) == {("R5", "R1"), ("R5", "R3"), ("R3", "R4")}
    ev = pairs[("R5", "R1")]["evidence"]
    assert ev == [
        {"kind": "citation", "cited": "R5", "gold_of": "R1", "items": ["fruit-01", "fruit-02"]}
    ]
    sim = pairs[("R3", "R4")]["evidence"]
    assert [e["kind"] for e in sim] == ["similarity"] and sim[0]["value"] == pytest.approx(0.5)
    assert rec["similarity"]["method"] == "jaccard"
    assert rec["label_mentions"] == [{"rule": "R4", "own_labels": ["metal"], "names": ["fruit"]}]
    assert rows["R4"]["names_other_labels"] == ["fruit"] and rows["R1"]["names_other_labels"] == []


def test_similarity_removes_what_every_rule_shares() -> None:
    texts = [r.text for r in RULES.instructions]
    raw_words = jaccard_matrix(texts)
    assert raw_words[1, 2] == 0.0  # "apple" vs "iron": the template words do not count
    vecs = HashEmbedder(dim=256)
    import asyncio

    v = asyncio.run(vecs.embed([*texts, texts[3]]))
    cos = cosine_matrix(v)
    assert cos[3, 5] == pytest.approx(1.0) and cos[1, 2] < 0.5
    assert names_other_labels(RULES.instructions[4], ("fruit", "metal", "animal")) == ["fruit"]
    hyph = Instruction("R9", "t", "Not for tech support issues.", ("billing",))
    assert names_other_labels(hyph, ("billing", "tech_support")) == ["tech_support"]


def test_an_embedder_replaces_the_lexical_fallback() -> None:
    from pld.models.client import EmbedClient

    rb = Rulebook.build(make_task(4), RULES, calibrate=False)
    emb = EmbedClient(HashEmbedder(dim=256))
    rec = audit(rb, _val(), ChatClient(follower(), role="student"), embedder=emb)
    assert rec["similarity"]["method"] == "cosine (fake-embed:hash256)"
    assert len(rec["similarity"]["pairs"]) == 7  # pairs naming different labels


def test_a_rerun_with_the_cache_costs_no_call_and_gives_the_same_record(tmp_path: Path) -> None:
    rb = Rulebook.build(make_task(4), RULES, calibrate=True)
    cache = Cache(tmp_path / "c.sqlite")
    first = audit(rb, _val(), ChatClient(follower(), role="student", cache=cache))
    again_model = follower()
    again = audit(rb, _val(), ChatClient(again_model, role="student", cache=cache))
    assert again_model.requests == []
    assert again["usage"]["student"]["calls"] == 0
    assert again["usage"]["student"]["cache_hits"] == first["usage"]["student"]["calls"] > 0
    assert {**again, "usage": None} == {**first, "usage": None}


def test_the_rules_must_be_in_the_prompt() -> None:
    from dataclasses import replace

    rb = Rulebook.build(make_task(1), RULES, calibrate=False)
    zero = replace(rb, system_prompt=Rulebook.build(make_task(1), InstructionSet(())).system_prompt)
    with pytest.raises(ConfigError, match="nothing to audit"):
        audit(zero, _val(), ChatClient(follower(), role="student"))
    assert [i.id for i in without(RULES, "R3").instructions] == ["R5", "R1", "R2", "R4"]


def _run_dir(tmp_path: Path, *, cli: bool = True) -> Path:
    """A saved rulebook whose run.json records its split and (with ``cli``) its data."""
    task = make_task(4)
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": e.id, "text": e.fields["text"], "label": e.label}) + "\n"
            for e in task.examples
        )
    )
    run = Rulebook.build(task, RULES, calibrate=False).save(tmp_path / "run")
    ledger = json.loads((run / "run.json").read_text())
    ledger.update(val_ids=[e.id for e in _val()], train_ids=[])
    if cli:
        ledger["cli"] = {
            "task": str(data),
            "description": "What is it about?",
            "student": "fake:follower",
        }
    (run / "run.json").write_text(json.dumps(ledger))
    return run


def test_pld_audit_writes_audit_json_and_prints_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pld.rulebook

    run = _run_dir(tmp_path)
    models: list[ScriptedChatModel] = []

    def resolve(spec: str) -> ScriptedChatModel:
        models.append(follower())
        return models[-1]

    monkeypatch.setattr(pld.rulebook, "resolve_chat", resolve)
    args = ["audit", str(run), "--embedder", "none", "--cache", str(tmp_path / "c.sqlite")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rec = load_audit(run)
    assert rec is not None and rec["student_spec"] == "fake:follower"
    assert [x["id"] for x in rec["rules"]] == ["R5", "R1", "R2", "R3", "R4"]
    assert re.search(r"R5\s.*metal.*\b6\b.*\b0\b.*\b4\b.*no_gain", r.output), r.output
    assert "overlap: R3 and R4 name different labels; similarity 0.50 (jaccard)" in r.output
    assert "label: R4 (metal) names fruit in its text" in r.output
    # the rulebook lint runs inside the audit: R4's mention of another label is PLD-L005
    assert ("PLD-L005", "R4") in {(f["code"], f["rule_id"]) for f in rec["lint"]}
    assert "lint: PLD-L005 R4" in r.output
    assert f"audit written to {run / AUDIT_FILE}" in r.output
    before = len(models[0].requests)
    assert f"student: {before} calls, 0 cache hits, 0 failed" in r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and len(models) == 2 and models[1].requests == []  # all cached
    assert f"student: 0 calls, {before} cache hits, 0 failed" in r.output


def test_audit_data_reloads_the_validation_items_or_says_what_to_give(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, cli=False)
    rb = Rulebook.load(run)
    with pytest.raises(ConfigError, match="give --task"):
        audit_data(rb)
    data = audit_data(rb, {"task": str(tmp_path / "data.jsonl"), "description": "What?"})
    assert [e.id for e in data.val] == [e.id for e in _val()]
    (tmp_path / "data.jsonl").write_text(
        '{"id": "x", "text": "a", "label": "fruit"}\n{"id": "y", "text": "b", "label": "metal"}\n'
    )
    with pytest.raises(ConfigError, match="lacks 12 of the run's 12 validation items"):
        audit_data(rb, {"task": str(tmp_path / "data.jsonl"), "description": "What?"})


def test_the_report_shows_the_per_rule_table_and_the_delta_plot(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    _, rec, _ = _run()
    save_audit(run, rec)
    page = build_report(run).read_text()
    table = re.search(r"<table id='audit'>.*?</table>", page, re.S)
    assert table, page[-2000:]
    for row in rec["rules"]:
        rid = row["id"]
        cell = re.search(
            rf"<tr id='audit-{rid}'>.*?data-metric='audit\.{rid}\.delta'>([+-]?[0-9.]+)<",
            table.group(0),
            re.S,
        )
        assert cell and cell.group(1) == f"{row['delta_macro_f1']:+.3f}"
    svg = re.search(r"<svg id='audit-plot'.*?</svg>", page, re.S)
    assert svg and svg.group(0).count("<rect") == len(rec["rules"])
    assert "removal candidate" in table.group(0) and "names fruit" in table.group(0)
    assert "R3 and R4" in page


def test_a_damaged_audit_json_names_the_fix(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    (run / AUDIT_FILE).write_text('{"rules": [{"id": "R1"}]}')
    with pytest.raises(RunDirError, match=r"rerun pld audit"):
        load_audit(run)


def test_audit_data_refuses_data_without_the_prompt_fields(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, cli=False)
    rows = [{"id": e.id, "body": e.fields["text"], "label": e.label} for e in _val()]
    (tmp_path / "other.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = {"task": str(tmp_path / "other.jsonl"), "description": "What?", "text_fields": ["body"]}
    with pytest.raises(ConfigError, match=r"lack the field\(s\) \['text'\].*--text-field"):
        audit_data(Rulebook.load(run), args)


def test_overwriting_a_run_directory_drops_its_old_audit(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    _, rec, _ = _run()
    save_audit(run, rec)
    assert load_audit(run) is not None
    Rulebook.build(make_task(4), without(RULES, "R5")).save(run)  # another rulebook, --force
    assert load_audit(run) is None and not (run / AUDIT_FILE).exists()
