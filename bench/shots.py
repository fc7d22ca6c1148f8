"""Rules plus demonstrations: does the frontier rulebook gain from the few-shot baseline's
examples? A measurement for issue #13, to decide whether demonstrations earn a place among the
candidates of pld's ``decide`` stage.

    python -m bench.shots --dataset stereoset-stereotype [--k 5]

On the stereotype scheme and Contract-NLI the frontier run's few-shot baseline beat pld
(bench/RESULTS.md, section 2a): the student copies labelled examples better than it follows
rules. This puts the few-shot baseline's own ``k`` demonstrations (same seed, same items) after
the final rulebook's system prompt (its fitted layout unchanged), keeps the higher-scoring of
raw and calibrated on the validation split (no default to defend, so no bootstrap-confidence
rule as in ``decide``), and scores that choice once on the test items. Each
reading is compared, paired, with pld's recorded answers and the few-shot rows of the same run
(``results.json``). The teacher is not asked anything: the rulebook is the recorded run's.
Writes ``<dataset>-frontier/shots.json``; resumable through the quality cache.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from bench.common import RESULTS, machine
from bench.peer import recorded_predictions, save_json
from bench.quality import load, score, spec
from pld.cache import Cache
from pld.evaluate import few_shot_prompt, mcnemar_counts
from pld.metrics import paired_bootstrap_diff
from pld.prompts import Prompt
from pld.rulebook import Rulebook

# The rows of the frontier run each reading is compared with.
COMPARED = ("pld", "few-shot", "few-shot-raw", "zero-shot-raw")


def paired(
    r: Mapping[str, Any], other: Mapping[str, Any], gold: Mapping[str, str], labels: list[str]
) -> dict[str, Any]:
    """``r`` minus ``other`` on the items both answered: paired bootstrap CI and McNemar."""
    a = recorded_predictions({i: r["_pred"][i] for i in other["_pred"]}, gold)
    b = recorded_predictions(other["_pred"], gold)
    return {
        "diff": paired_bootstrap_diff(a, b, labels),
        "mcnemar": mcnemar_counts(r["_correct"], other["_correct"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", default="qwen-1.5b")
    ap.add_argument("--k", type=int, default=5, help="demonstrations (the few-shot baseline's k)")
    a = ap.parse_args()
    qdir = RESULTS / "quality" / f"{a.dataset}-frontier"
    qres = json.loads((qdir / "results.json").read_text())
    q = qres["args"]
    task, train, val, test = load(
        a.dataset, q["n_train"], q["n_val"], q["n_test"], q["seed"], q.get("max_chars", 1200)
    )
    rb = Rulebook.load(qdir / f"run-{a.model}")
    shots = few_shot_prompt(task, train, a.k, q["seed"]).shots
    prompt = Prompt(rb.prompt.system, rb.prompt.user_template, shots)
    s_spec, cache = spec(a.model, a.dataset), Cache(RESULTS / "quality" / "cache.sqlite")

    def run(items: list[Any], calibrate: bool, key: str) -> dict[str, Any]:
        return score(
            s_spec, key, "pld-shots", task, items, cache, prompt,
            train=train, seed=q["seed"], calibrate=calibrate,
        )  # fmt: skip

    # raw vs. calibrated on validation (the same cached distributions)
    val_rows = {cal: run(val, cal, f"val calibrate={cal}") for cal in (False, True)}
    calibrate = max((False, True), key=lambda c: val_rows[c]["macro_f1"])
    test_row = run(test, calibrate, f"test calibrate={calibrate}")
    gold = {e.id: e.label for e in test}
    methods = qres["students"][a.model]["methods"]
    out = {
        "machine": machine(),
        "args": vars(a),
        "quality_args": q,
        "rulebook_calibrate": rb.calibrate,
        "rulebook_val_macro_f1": (rb.decision or {}).get("val_macro_f1"),
        "shots": [{"label": lab, "chars": len(text)} for text, lab in shots],
        "val": {
            str(c): {k: r[k] for k in ("macro_f1", "accuracy", "invalid")}
            for c, r in val_rows.items()
        },
        "calibrate": calibrate,
        "test": {k: v for k, v in test_row.items() if k not in ("_correct", "_pred")},
        "vs": {m: paired(test_row, methods[m], gold, list(task.labels)) for m in COMPARED},
        "_pred": test_row["_pred"],
    }
    save_json(qdir / "shots.json", out)
    for m, v in out["vs"].items():
        d = v["diff"]
        print(
            f"pld+{a.k} shots − {m}: {d['diff']:+.3f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
            f", McNemar p = {v['mcnemar']['p_value']:.2g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
