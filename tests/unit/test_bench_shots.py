"""bench.shots' comparison: paired on the items both sides answered, direction a minus b."""

from __future__ import annotations

from bench.shots import paired


def test_paired_compares_on_the_other_rows_items_only() -> None:
    gold = {"i0": "a", "i1": "b", "i2": "a", "i3": "b"}
    mine = {
        "_pred": {"i0": "a", "i1": "b", "i2": "a", "i3": "b"},  # right everywhere
        "_correct": {"i0": True, "i1": True, "i2": True, "i3": True},
    }
    other = {  # wrong on i1, and did not score i3 (a CoT row on a prefix of the test items)
        "_pred": {"i0": "a", "i1": "a", "i2": "a"},
        "_correct": {"i0": True, "i1": False, "i2": True},
    }
    r = paired(mine, other, gold, ["a", "b"])
    assert r["diff"]["n"] == 3 and r["diff"]["diff"] > 0
    assert r["mcnemar"]["a_only_correct"] == 1 and r["mcnemar"]["b_only_correct"] == 0
