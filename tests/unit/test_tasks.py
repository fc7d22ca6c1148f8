"""Loaders, task files and splits: bad input gets an error naming file, line and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pld.errors import DataError
from pld.tasks.base import Example, Task, render_template, stratified_split
from pld.tasks.files import load_records, load_task


def write(p: Path, lines: list[str]) -> Path:
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_demo_task_loads() -> None:
    t = load_task("demo")
    assert len(t.examples) == 100
    assert set(t.labels) == {"billing", "technical", "account", "shipping"}
    assert {lab: sum(e.label == lab for e in t.examples) for lab in t.labels} == dict.fromkeys(
        t.labels, 25
    )


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"id": 1, "text": "a", "label": "x"}', "{broken"], r"d\.jsonl:2: malformed JSON"),
        (['{"id": 1, "text": "  ", "label": "x"}'], r":1: field 'text' is empty"),
        (['{"id": 1, "text": "a", "label": "zzz"}'], r":1: label 'zzz' is not in the label set"),
        (
            ['{"id": 1, "text": "a", "label": "x"}', '{"id": 1, "text": "b", "label": "y"}'],
            r":2: duplicate id '1' \(first on line 1\)",
        ),
        (['{"id": 1, "body": "a", "label": "x"}'], r":1: missing field 'text'.*--text-field"),
        (["[1, 2]"], r":1: expected a JSON object"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, lines: list[str], match: str) -> None:
    p = write(tmp_path / "d.jsonl", lines)
    with pytest.raises(DataError, match=match):
        load_records(p, labels=["x", "y"])


def test_wrong_encoding(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_bytes(
        b'{"id": 1, "text": "ok", "label": "x"}\n{"id": 2, "text": "caf\xe9", "label": "x"}\n'
    )
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid UTF-8.*re-save"):
        load_records(p)


def test_csv_loader(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", ["id,text,label", '1,"hello, world",x', "2,bye,y"])
    ex = load_records(p, labels=["x", "y"])
    assert [(e.id, e.fields["text"], e.label) for e in ex] == [
        ("1", "hello, world", "x"),
        ("2", "bye", "y"),
    ]


def test_task_validation() -> None:
    with pytest.raises(DataError, match="at least 2 labels"):
        Task("t", "d", ("only",))
    with pytest.raises(DataError, match="description is empty"):
        Task("t", "  ", ("a", "b"))


def test_template_leaves_braces_in_data_alone() -> None:
    assert render_template("Q: {text}", {"text": "{label} {text}"}) == "Q: {label} {text}"


def test_split_is_stratified_grouped_and_seeded() -> None:
    ex = [
        Example(f"{g}-{k}", {"text": "x"}, lab, group=f"g{g}")
        for g in range(60)
        for k, lab in enumerate(("a", "b", "c"))
    ]
    s1 = stratified_split(
        ex, fractions=(0.5, 0.25, 0.25), seed=3, stratify=lambda e: e.group[-1] if e.group else ""
    )
    s2 = stratified_split(
        ex, fractions=(0.5, 0.25, 0.25), seed=3, stratify=lambda e: e.group[-1] if e.group else ""
    )
    assert s1 == s2
    groups = [{e.group for e in part} for part in (s1.train, s1.val, s1.test)]
    assert (
        not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    )
    assert len(s1.train) + len(s1.val) + len(s1.test) == 180
    assert 80 <= len(s1.train) <= 100


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=30).filter(lambda s: s.strip()),
            st.sampled_from(["x", "y"]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_jsonl_roundtrip_property(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, str]]
) -> None:
    p = tmp_path_factory.mktemp("h") / "d.jsonl"
    p.write_text(
        "".join(
            json.dumps({"id": i, "text": t, "label": lab}) + "\n" for i, (t, lab) in enumerate(rows)
        ),
        encoding="utf-8",
    )
    ex = load_records(p, labels=["x", "y"])
    assert [(e.fields["text"], e.label) for e in ex] == rows


def test_data_file_task_needs_a_description_and_infers_labels(tmp_path: Path) -> None:
    p = write(
        tmp_path / "d.jsonl",
        ['{"q": "a", "ctx": "c1", "y": "x"}', '{"q": "b", "ctx": "c2", "y": "y"}'],
    )
    with pytest.raises(DataError, match="needs --description"):
        load_task(str(p))
    t = load_task(str(p), description="Say x or y.", text_fields=("q", "ctx"), label_field="y")
    assert t.labels == ("x", "y") and t.render(t.examples[0]) == "q: a\nctx: c1"


def test_yaml_task_file(tmp_path: Path) -> None:
    write(tmp_path / "d.jsonl", ['{"id": "1", "text": "a", "label": "x"}'])
    (tmp_path / "t.yaml").write_text(
        "description: Say x or y.\nlabels: [x, y]\ndata:\n  path: d.jsonl\n", encoding="utf-8"
    )
    t = load_task(str(tmp_path / "t.yaml"))
    assert t.labels == ("x", "y") and len(t.examples) == 1
    (tmp_path / "bad.toml").write_text(
        'description = "d"\nlabels = ["x", "y"]\nfoo = 1\n[data]\npath = "d.jsonl"\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"unknown keys \['foo'\]"):
        load_task(str(tmp_path / "bad.toml"))


@pytest.mark.parametrize(
    ("label", "kind"),
    [
        ("true", "a boolean"),
        ('["positive"]', "a list"),
        ('{"name": "positive"}', "an object"),
        ("1.5", "a decimal number"),
    ],
)
def test_a_label_that_is_not_a_string_is_a_data_error(
    tmp_path: Path, label: str, kind: str
) -> None:
    """Issue #11.12: true became "True" and ["positive"] became "['positive']", silently."""
    p = write(
        tmp_path / "d.jsonl",
        ['{"id": 1, "text": "a", "label": "x"}', f'{{"id": 2, "text": "b", "label": {label}}}'],
    )
    with pytest.raises(DataError, match=rf"d\.jsonl:2: label field 'label' is {kind} .*string"):
        load_records(p)
    with pytest.raises(DataError, match=r"d\.jsonl:2: label field"):
        load_records(p, require_label=False)


def test_integer_labels_are_their_decimal_strings(tmp_path: Path) -> None:
    """0/1 labels are common in JSON data sets: they are read as "0" and "1"."""
    p = write(
        tmp_path / "d.jsonl",
        ['{"id": 1, "text": "a", "label": 0}', '{"id": 2, "text": "b", "label": 1}'],
    )
    assert [e.label for e in load_records(p, labels=["0", "1"])] == ["0", "1"]
    q = write(tmp_path / "n.jsonl", ['{"id": 1, "text": "a", "label": null}'])
    with pytest.raises(DataError, match=r"n\.jsonl:1: missing label field"):
        load_records(q)


def test_task_file_labels_must_be_strings(tmp_path: Path) -> None:
    """YAML reads `labels: [yes, no]` as booleans; that must not become "True"/"False"."""
    write(tmp_path / "d.jsonl", ['{"id": "1", "text": "a", "label": "yes"}'])
    (tmp_path / "t.yaml").write_text(
        "description: Say yes or no.\nlabels: [yes, no]\ndata:\n  path: d.jsonl\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"t\.yaml: \[labels\] entry is a boolean"):
        load_task(str(tmp_path / "t.yaml"))
