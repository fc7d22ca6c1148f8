"""Baselines and statistics."""

from __future__ import annotations

from pld.evaluate import few_shot_prompt, mcnemar, parse_cot
from pld.metrics import bootstrap_ci, macro_f1, summary
from pld.predictions import Prediction
from tests.fakes import make_task


def P(i: str, label: str | None, gold: str) -> Prediction:
    return Prediction(i, label, label or "?", None, 0.1, 10, 1, 0, False, gold)


def test_parse_cot_takes_the_last_answer_line() -> None:
    labels = ["fruit", "metal"]
    assert parse_cot("Answer: metal\nhmm... Answer: fruit.", labels) == "fruit"
    assert parse_cot("I think fruit", labels) is None


def test_few_shot_prompt_is_seeded() -> None:
    task = make_task(5)
    a = few_shot_prompt(task, task.examples, 5, seed=1)
    b = few_shot_prompt(task, list(reversed(task.examples)), 5, seed=1)
    assert a == b and len(a.shots) == 5
    assert a != few_shot_prompt(task, task.examples, 5, seed=2)


def test_mcnemar_exact() -> None:
    a = [P(str(i), "x", "x") for i in range(10)]
    b = [P(str(i), "y" if i < 8 else "x", "x") for i in range(10)]
    r = mcnemar(a, b)
    assert r["a_only_correct"] == 8 and r["b_only_correct"] == 0
    assert abs(r["p_value"] - 2 * 0.5**8) < 1e-12
    assert mcnemar(a, a)["p_value"] == 1.0


def test_invalid_counts_as_wrong_and_is_reported() -> None:
    preds = [P("1", "x", "x"), P("2", None, "y"), P("3", "y", "y")]
    s = summary(preds, ["x", "y"])
    assert s["invalid"] == 1 and abs(s["accuracy"] - 2 / 3) < 1e-9
    assert s["confusion"]["y"]["<invalid>"] == 1
    assert abs(s["macro_f1"] - macro_f1(preds, ["x", "y"])) < 1e-12
    from sklearn.metrics import f1_score

    sk = f1_score(["x", "y", "y"], ["x", "<invalid>", "y"], labels=["x", "y"], average="macro")
    assert abs(s["macro_f1"] - sk) < 1e-12
    lo, hi = bootstrap_ci(preds, ["x", "y"], n=200)
    assert 0.0 <= lo <= hi <= 1.0
