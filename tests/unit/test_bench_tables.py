"""bench.tables states what a run's teacher cost, including runs that replayed a recording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.tables import _attempt_line, _teacher_use, _test_p50


def test_a_replayed_frontier_run_reports_its_transcript_not_zero_calls() -> None:
    replayed = {"usage_by_role": {"teacher": {"calls": 0, "cache_hits": 0}}}
    run = {"teacher_transcript": {"requests": 126, "answers": 126, "quoting_test_items": []}}
    assert _teacher_use(run, replayed) == (
        "teacher replayed from its transcript (126 requests, 126 replies, 0 quoting a test item)"
    )
    live = {"usage_by_role": {"teacher": {"calls": 4, "cache_hits": 55, "prompt_tokens": 10,
                                          "completion_tokens": 3}}}  # fmt: skip
    assert _teacher_use(run, live) == "teacher 4 calls (55 cache hits), 10 + 3 tokens"
    assert _teacher_use({}, replayed).startswith("teacher 0 calls")


def test_a_test_pass_replayed_from_cache_has_no_latency() -> None:
    served = {"n": 3, "latency_p50_s": 0.5, "usage": {"student": {"calls": 3, "prompt_tokens": 9}}}
    assert _test_p50(served) == "500"
    replayed = {"n": 3, "latency_p50_s": 0.004, "usage": {"student": {"cache_hits": 3}}}
    assert _test_p50(replayed) == "- (3 of 3 replayed)"


def test_a_paused_search_is_not_reported_as_a_failure() -> None:
    usage = {
        "teacher": {"calls": 8, "prompt_tokens": 9},
        "student": {"calls": 438, "prompt_tokens": 9},
    }
    paused = {"optimizer": "dspy-gepa", "wall_s": 3600.0, "error": "paused by x at 8",
              "usage": usage}  # fmt: skip
    assert _attempt_line(paused, {}) == (
        "\nA dspy-gepa attempt was paused after 3600 s (no row yet: its 8 teacher and 438 "
        "student calls count when it finishes): paused by x at 8"
    )
    died = {"optimizer": "dspy-gepa", "wall_s": 1.0, "error": "the process ended\nmore"}
    assert _attempt_line(died, {"dspy-gepa": {}}).endswith(
        "failed after 1 s and was resumed (its calls are counted above): the process ended"
    )


def test_disagreements_lists_the_items_only_one_side_got_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.quality
    import bench.tables
    from pld.tasks.base import Example

    test = [Example(f"i{k}", {"text": t}, g) for k, (t, g) in
            enumerate([("Brahmin are kind", "religion"), ("my sister", "gender"),
                       ("the nurse", "profession")])]  # fmt: skip
    monkeypatch.setattr(bench.quality, "load", lambda *a: (None, [], [], test))
    monkeypatch.setattr(bench.tables, "RESULTS", tmp_path)
    d = {
        "quality_args": {"dataset": "x", "n_train": 0, "n_val": 0, "n_test": 3, "seed": 0},
        "pld_frontier": {"_pred": {"i0": "race", "i1": "gender", "i2": "gender"}},
        "quality_baselines": {},
        "methods": {"g": {"_pred": {"i0": "religion", "i1": "race", "i2": "gender"}}},
    }
    (tmp_path / "quality" / "x-frontier").mkdir(parents=True)
    (tmp_path / "quality" / "x-frontier" / "peer-dspy.json").write_text(json.dumps(d))
    text = bench.tables.disagreements("x-frontier", "g", "brahmin")
    assert "right only in pld (1 items)" in text and "- gender ← race: my sister" in text
    assert "right only in g (1 items)" in text and "- religion ← race: Brahmin are kind" in text
    assert "religion → race: 1" in text
    assert "containing 'brahmin': 1; right in pld 0, in g 1" in text


def test_versus_pairs_a_variant_with_the_base_run_and_its_dspy_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.quality
    import bench.tables
    from pld.tasks.base import Example

    gold = ["a", "b", "a", "b"]
    test = [Example(f"i{k}", {"text": "t"}, g) for k, g in enumerate(gold)]
    monkeypatch.setattr(bench.quality, "load", lambda *a: (None, [], [], test))
    monkeypatch.setattr(bench.tables, "RESULTS", tmp_path)

    def row(pred: list[str]) -> dict[str, object]:
        return {
            "n": 4,
            "macro_f1": 0.5,
            "per_class": {"a": {}, "b": {}},
            "_pred": {f"i{k}": p for k, p in enumerate(pred)},
            "_correct": {f"i{k}": p == g for k, (p, g) in enumerate(zip(pred, gold, strict=True))},
        }

    args = {"dataset": "x", "n_train": 2, "n_val": 2, "n_test": 4, "seed": 0}
    files = {
        "v/results.json": {"args": args, "students": {"s": {"methods": {"pld": row(gold)}}}},
        "b/results.json": {
            "args": args,
            "students": {"s": {"methods": {"pld": row(["a", "a", "a", "a"])}}},
        },
        "b/peer-dspy.json": {"args": {"model": "s"}, "methods": {"g": row(["b", "b", "b", "b"])}},
    }
    for name, d in files.items():
        (tmp_path / "quality" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "quality" / name).write_text(json.dumps(d))
    text = bench.tables.versus("v", "b")
    assert "| pld (b) | 4 | 0.500 | +0.667" in text and "| g | 4 | 0.500 | +0.667" in text
    args2 = {**args, "seed": 1}
    (tmp_path / "quality" / "v" / "results.json").write_text(
        json.dumps({"args": args2, "students": {}})
    )
    with pytest.raises(SystemExit, match="differ in seed"):
        bench.tables.versus("v", "b")
