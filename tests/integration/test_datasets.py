"""The paper's datasets from ../shared/data, with the counts each SOURCE.md states."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pld.errors import DataError
from pld.tasks.base import stratified_split
from pld.tasks.datasets import fit_premise, load_contract_nli, load_logiqa, load_stereoset
from pld.tasks.files import load_task
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.integration
STEREO = SHARED_DATA / "stereoset" / "stereoset.json"
NLI = SHARED_DATA / "contract_nli"
LOGIQA = SHARED_DATA / "logiqa"


def test_stereoset_counts() -> None:
    intra = load_stereoset(STEREO, variant="intrasentence")
    inter = load_stereoset(STEREO, variant="intersentence")
    assert len(intra.examples) == 6318 and len({e.group for e in intra.examples}) == 2106
    assert len(inter.examples) == 6369 and len({e.group for e in inter.examples}) == 2123
    assert Counter(e.label for e in intra.examples) == dict.fromkeys(
        ("stereotype", "anti-stereotype", "unrelated"), 2106
    )
    dom = load_stereoset(STEREO, variant="intrasentence", scheme="domain")
    clusters = {e.group: e.label for e in dom.examples}
    assert Counter(clusters.values()) == {
        "gender": 255,
        "profession": 810,
        "race": 962,
        "religion": 79,
    }
    dom_inter = load_stereoset(STEREO, variant="intersentence", scheme="domain")
    assert Counter({e.group: e.label for e in dom_inter.examples}.values()) == {
        "gender": 242,
        "profession": 827,
        "race": 976,
        "religion": 78,
    }
    ex = next(e for e in intra.examples if e.fields["sentence"] == "The chess player was asian.")
    assert ex.label == "stereotype" and intra.render(ex).startswith("Target group: chess player")


def test_stereoset_split_keeps_clusters_whole() -> None:
    t = load_stereoset(STEREO)
    sp = stratified_split(t.examples, fractions=(0.5, 0.25, 0.25), seed=0)
    g = [{e.group for e in part} for part in (sp.train, sp.val, sp.test)]
    assert not (g[0] & g[1] or g[0] & g[2] or g[1] & g[2])
    for part in (sp.train, sp.val, sp.test):
        c = Counter(e.label for e in part)
        assert c["stereotype"] == c["anti-stereotype"] == c["unrelated"]


@pytest.mark.parametrize(
    ("name", "docs", "counts"),
    [
        ("train_truncated", 50, (389, 114, 347)),
        ("dev", 61, (519, 95, 423)),
        ("test", 123, (968, 220, 903)),
    ],
)
def test_contract_nli_counts(name: str, docs: int, counts: tuple[int, int, int]) -> None:
    t = load_contract_nli(NLI / f"{name}.json")
    assert len(t.examples) == 17 * docs and len({e.group for e in t.examples}) == docs
    c = Counter(e.label for e in t.examples)
    assert (c["Entailment"], c["Contradiction"], c["NotMentioned"]) == counts
    # the premise is the whole contract, never the gold evidence
    assert all(len(e.fields["premise"]) >= 1231 for e in t.examples)


def test_contract_nli_long_documents_are_shortened_and_counted() -> None:
    t = load_task(f"contract-nli@{NLI / 'dev.json'}?max_chars=6000&strategy=retrieve")
    assert all(len(e.fields["premise"]) <= 6000 for e in t.examples)
    assert t.notes and t.notes[0].endswith("chars were shortened (retrieve)")
    n = int(t.notes[0].split()[0])
    assert 0 < n < len(t.examples)
    text = "a" * 50 + " confidential information return " + "b" * 50
    spans = [[0, 50], [51, 82], [84, 134]]
    short, cut = fit_premise(text, spans, "return confidential information", 40, "retrieve")
    assert cut and short == "confidential information return"
    with pytest.raises(DataError, match="truncate or retrieve"):
        fit_premise(text, spans, "x", 10, "summarise")


def test_logiqa_counts_and_reordered_answers() -> None:
    ev = load_logiqa(LOGIQA / "Eval.txt")
    te = load_logiqa(LOGIQA / "Test.txt")
    assert len(ev.examples) == len(te.examples) == 651
    assert Counter(e.label for e in ev.examples) == {"A": 109, "B": 122, "C": 150, "D": 270}
    assert Counter(e.label for e in te.examples) == {"A": 132, "B": 159, "C": 179, "D": 181}
    q108 = te.examples[108]  # printed A, C, B, D; key b = "No.2 and No.3", printed "B."
    assert q108.label == "B"
    opts = q108.fields["options"].splitlines()
    assert opts[1].startswith("B. No.2 valve and No.3 valve")
    assert [o[:2] for o in opts] == ["A.", "B.", "C.", "D."]
    # the "An ..." option is not cut by the prefix strip
    assert not any(
        o.startswith(("A. .", "B. ."))
        for e in ev.examples
        for o in e.fields["options"].splitlines()
    )


def test_dataset_refs_validate_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown option"):
        load_task(f"stereoset@{STEREO}?variant=intrasentence&schema=domain")
    with pytest.raises(DataError, match="cannot read"):
        load_task(f"logiqa@{tmp_path / 'missing.txt'}")
