"""The decide stage with the real embedded student (SmolLM2 via xllamacpp): it scores the
layouts on validation from real label distributions, saves its record, and a loaded rulebook
sends exactly the chosen layout's bytes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pld.decide import DecideSettings, decide
from pld.models.client import ChatClient
from pld.models.local import LocalChatModel
from pld.phases.layouts import render_layout
from pld.rulebook import Rulebook
from pld.rules import Instruction, InstructionSet
from tests.fakes import KEYWORDS, make_task

pytestmark = pytest.mark.integration


def test_decide_runs_with_the_embedded_student_and_saves_its_record(
    smollm2_chat: LocalChatModel, tmp_path: Path
) -> None:
    task = make_task(2)
    rules = InstructionSet(
        tuple(
            Instruction(
                f"R{k}", f"{lab}", f"If the text mentions {kw}, the label is {lab}.", (lab,)
            )
            for k, (lab, kw) in enumerate(KEYWORDS.items(), 1)
        )
    )
    rb = Rulebook.build(task, rules, models={"student": smollm2_chat.identity})
    client = ChatClient(smollm2_chat, role="student")
    settings = DecideSettings(
        ("default", "fields"), calibrate=True, confidence=0.9, if_worse="warn"
    )
    fitted = asyncio.run(decide(rb, list(task.examples), client, settings))
    d = fitted.decision
    assert d is not None and d["n_val"] == len(task.examples)
    assert {(c["layout"], c["calibrate"]) for c in d["candidates"]} == {
        ("default", True),
        ("default", False),
        ("fields", True),
        ("fields", False),
    }
    assert all(0.0 <= c["val_macro_f1"] <= 1.0 for c in d["candidates"])
    assert d["zero_shot"]["candidates"] and d["guard"]["action"] == "warn"
    assert isinstance(d["reason"], str) and d["reason"]

    fitted.save(tmp_path / "rb")
    saved = json.loads((tmp_path / "rb" / "decision.json").read_text())
    assert saved == json.loads(json.dumps(d))
    loaded = Rulebook.load(tmp_path / "rb")
    want = render_layout(
        saved["used"]["layout"], task, rules if saved["used"]["prompt"] == "rulebook" else None
    )
    assert loaded.system_prompt == want.system and loaded.calibrate == saved["used"]["calibrate"]
    preds = loaded.predict(list(task.examples), ChatClient(smollm2_chat, role="student"))
    assert len(preds) == len(task.examples) and all(p.label in task.labels for p in preds)
