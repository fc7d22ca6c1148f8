"""Property-based tests for everything that reads model output, plus input guards."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pld.distiller import Distiller
from pld.errors import DataError, RunDirError
from pld.evaluate import parse_cot
from pld.models.fake import HashEmbedder
from pld.phases.classify import parse_label
from pld.prompts import fence, parse_json_object
from pld.rundir import RunDir
from tests.fakes import make_student, make_task, make_teacher

LABELS = ["billing", "technical", "account", "Not Mentioned"]


@given(
    st.sampled_from(LABELS),
    st.sampled_from(["", " ", "\n", '"', "'", "*"]),
    st.sampled_from(["", ".", "!", '"', " ", "\n\nmore text"]),
)
def test_parse_label_accepts_a_decorated_label(label: str, pre: str, post: str) -> None:
    assert parse_label(pre + label + post, LABELS) == label
    assert parse_label(pre + label.upper() + post, LABELS) == label


@given(st.text(max_size=60))
def test_parse_label_never_invents_a_label(text: str) -> None:
    got = parse_label(text, LABELS)
    assert got is None or got in LABELS
    if got is not None:
        assert got.lower() in text.lower()


@given(st.text(max_size=80))
def test_parse_cot_returns_a_label_or_none(text: str) -> None:
    got = parse_cot(text, LABELS)
    assert got is None or got in LABELS


@given(
    st.dictionaries(
        st.text(max_size=10), st.one_of(st.text(max_size=20), st.integers()), max_size=5
    )
)
def test_parse_json_object_roundtrip(obj: dict[str, object]) -> None:
    assert parse_json_object(json.dumps(obj)) == obj
    assert parse_json_object("```json\n" + json.dumps(obj) + "\n```") == obj


@given(st.text(max_size=80))
def test_parse_json_object_only_yields_dicts(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert isinstance(parse_json_object(text), dict)


@given(st.text(max_size=200))
def test_fence_cannot_be_closed_by_data(text: str) -> None:
    fenced = fence(text)
    assert fenced.startswith("<input>\n") and fenced.endswith("\n</input>")
    assert fenced.count("</input>") == 1


def test_split_without_a_label_is_refused(tmp_path: Path) -> None:
    task = make_task(4)
    no_animal = task.with_examples([e for e in task.examples if e.label != "animal"])
    d = Distiller(make_teacher(), make_student(), HashEmbedder(), cache=tmp_path / "c")
    with pytest.raises(
        DataError, match=r"training split has no example of label\(s\) \['animal'\]"
    ):
        d.fit(no_animal, task)


def test_unwritable_output_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        RunDir(tmp_path / "file")
    with pytest.raises(RunDirError, match="cannot write to"):
        RunDir(tmp_path / "file" / "run")
