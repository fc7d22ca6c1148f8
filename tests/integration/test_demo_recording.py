"""The demo's recorded teacher: every extraction and consolidation request the demo asks is
answered by the shipped recording (``src/pld/data/demo_teacher.jsonl``) — this test fails when
a prompt change makes the demo ask something new, which then needs a new recording, on
purpose (``python -m bench.record_demo_teacher``). And when a resolve round is not covered
(the student failed on other items than on the recording's machine), the demo keeps the best
rulebook so far, calls no live teacher, and says so.

Extraction and synthesis requests do not depend on the student (the training examples, the
recorded rules and the real embedded embedder's clusters decide them), so the student here is
scripted: it answers the first label whatever the input, which makes training mistakes
certain and the uncovered-resolve path deterministic, at no CPU cost. The real student runs
the same fit in ``make demo`` and in the e2e distillation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pld.audit import audit_data
from pld.cache import Cache
from pld.demo import DEMO_TEACHER, demo_data, fit_recorded, recorded_answerer, recording_path
from pld.rulebook import Rulebook
from tests.fakes import LogprobStudent

pytestmark = pytest.mark.integration  # the embedder is the real embedded model


def test_recording_covers_the_demo_and_an_uncovered_resolve_round_keeps_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # nothing may be sent
    recorded = recorded_answerer(recording_path())
    exports: list[tuple[str, int, list[str]]] = []

    def answer(requests_file: Path, results: Path) -> list[str]:
        missing = recorded(requests_file, results)
        n = len(requests_file.read_text().splitlines())
        exports.append((requests_file.name, n, missing))
        if requests_file.name.startswith("requests-resolve-"):
            return [f"(as if not recorded) {n} requests"]  # another machine's student
        return missing

    student = LogprobStudent()
    d, note = fit_recorded(tmp_path / "run", student, 2, Cache(tmp_path / "c.sqlite"),
                           answer=answer)  # fmt: skip
    uncovered = [(name, m) for name, _, m in exports if m and "resolve" not in name]
    assert not uncovered, f"the demo recording does not answer: {uncovered}"
    assert [e[0] for e in exports][:2] == [
        "requests-extract-1.jsonl",
        "requests-synthesize-1.jsonl",
    ]
    assert exports[0][1] == 40
    assert d.rulebook_.models["teacher"] == DEMO_TEACHER
    assert len(d.instructions_) >= 4 and d.instructions_.labels_covered() == {
        "billing",
        "technical",
        "account",
        "shipping",
    }
    # a student that always answers the first label fails on training items: round 1 asks
    assert any(name.startswith("requests-resolve-") for name, _, _ in exports), exports
    assert "kept the best rulebook after round 0" in note
    assert d.instructions_ == d.instructions_v0_
    assert student.requests  # the scripted student was the one asked
    # the run records its data like `pld distill --task demo`: `pld audit` finds its items
    data = audit_data(Rulebook.load(tmp_path / "run"))
    assert [e.id for e in data.val] == [e.id for e in demo_data()[1].val]
