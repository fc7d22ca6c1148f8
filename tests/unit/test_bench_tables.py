"""bench.tables states what a run's teacher cost, including runs that replayed a recording."""

from __future__ import annotations

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
