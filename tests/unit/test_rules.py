"""InstructionSet: immutable edits, rendering, JSON round trips."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pld.rules import Edit, Instruction, InstructionSet, render_markdown, render_system_prompt

LABELS = ("billing", "technical")
BASE = InstructionSet(
    (
        Instruction("R1", "Money", "If it is about charges, billing.", ("billing",), ("e1",)),
        Instruction("R2", "Bugs", "If something breaks, technical.", ("technical",), ("e2",)),
    )
)


def test_edits_return_new_versions() -> None:
    new, out = BASE.apply(
        [
            Edit("edit", id="R1", text="If charges or refunds, billing.", labels=("billing",)),
            Edit(
                "add", topic="Crash", text="If the app crashes, technical.", labels=("technical",)
            ),
            Edit("remove", id="R9"),
        ],
        tag="round 1",
        labels=LABELS,
    )
    assert BASE.version == 0 and new.version == 1
    assert BASE.get("R1").text == "If it is about charges, billing."  # type: ignore[union-attr]
    assert new.get("R1").text == "If charges or refunds, billing."  # type: ignore[union-attr]
    assert new.get("R1").history == ("round 1: edit",)  # type: ignore[union-attr]
    assert new.get("R3") is not None
    assert [o["applied"] for o in out] == [True, True, False]
    assert out[2]["why"] == "unknown id"


def test_merge_keeps_provenance() -> None:
    new, out = BASE.apply(
        [Edit("merge", ids=("R1", "R2"), text="Decide by topic.", labels=("billing", "x"))],
        tag="r2",
        labels=LABELS,
    )
    assert out[0]["applied"]
    assert len(new) == 1
    m = new.instructions[0]
    assert m.sources == ("e1", "e2") and m.labels == ("billing",)
    assert "of R1, R2" in m.history[-1]


def test_system_prompt_is_deterministic_and_self_contained() -> None:
    a = render_system_prompt("Route tickets.", LABELS, {"billing": "money"}, BASE)
    b = render_system_prompt("Route tickets.", LABELS, {"billing": "money"}, BASE)
    assert a == b
    assert "[R1] Money -> billing: If it is about charges, billing." in a
    assert a.rstrip().endswith("Reply with the label only.")
    md = render_markdown(BASE, task_name="t", sources={"e1": "charged twice"})
    assert "## R1. Money" in md and "charged twice" in md


texts = st.text(min_size=1, max_size=40)
instr = st.builds(
    Instruction,
    id=st.just("R0"),
    topic=texts,
    text=texts,
    labels=st.lists(texts, max_size=3).map(tuple),
    sources=st.lists(texts, max_size=3).map(tuple),
    history=st.lists(texts, max_size=3).map(tuple),
)


@given(st.lists(instr, max_size=6), st.integers(0, 50))
def test_json_roundtrip_is_identity(items: list[Instruction], version: int) -> None:
    items = [
        Instruction(f"R{k}", i.topic, i.text, i.labels, i.sources, i.history)
        for k, i in enumerate(items)
    ]
    s = InstructionSet(tuple(items), version)
    j = s.to_json()
    again = InstructionSet.from_json(json.loads(json.dumps(j)))
    assert again == s
    assert again.to_json() == j
