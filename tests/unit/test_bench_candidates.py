"""bench.candidates reads each synthesis candidate on test as the choice read it on validation."""

from __future__ import annotations

from bench.candidates import choice_reading


def test_a_candidate_is_read_calibrated_only_where_the_choice_did() -> None:
    raw = {"val_macro_f1_raw": 0.47, "val_macro_f1_calibrated": 0.17, "score": 0.47}
    cal = {"macro_f1_raw": 0.30, "macro_f1_calibrated": 0.41, "score": 0.41}
    # decide off with calibrate=false: the score is raw even where calibrated was higher
    forced_raw = {"val_macro_f1_raw": 0.30, "val_macro_f1_calibrated": 0.41, "score": 0.30}
    no_dist = {"macro_f1_raw": 0.30, "macro_f1_calibrated": None, "score": 0.30}
    assert [choice_reading(c) for c in (raw, cal, forced_raw, no_dist)] == [
        False,
        True,
        False,
        False,
    ]
