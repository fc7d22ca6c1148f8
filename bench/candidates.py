"""Did validation choose the right synthesis candidate? Scores every candidate a run's
``synthesis_candidates.json`` holds on the test items, read as the choice read them.

    python -m bench.candidates stereoset-stereotype-frontier-x60-r0c2p1-s4 [--model qwen-1.5b]

``DistillConfig.synthesis_candidates`` keeps the merge the student scores best on validation
(default layout, raw or calibrated as recorded). A run only ever shows the kept one on test, so
whether validation ranks merges as test does is unmeasured by the run itself; this measures it
after the fact, for the record, and changes nothing in the run. Each candidate costs one pass
over the test items (the validation pass repeats from the cache, a check that the recorded
scores reproduce). Writes ``<run folder>/candidates.json``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.common import RESULTS, machine
from bench.peer import recorded_predictions, save_json
from bench.quality import load, score, spec
from pld.cache import Cache
from pld.metrics import paired_bootstrap_diff, paired_text
from pld.phases.layouts import DEFAULT_LAYOUT, render_layout
from pld.rules import InstructionSet


def choice_reading(c: dict[str, Any]) -> bool:
    """Whether the choice read this candidate calibrated: only where that scored higher on
    validation than raw (its ``score`` is the better reading when the decide stage is on)."""
    # records written before the choice could use training items name these "val_..."
    cal = c.get("macro_f1_calibrated", c.get("val_macro_f1_calibrated"))
    raw = c.get("macro_f1_raw", c.get("val_macro_f1_raw"))
    return cal is not None and cal > raw and c["score"] == cal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", help="a bench/results/quality folder of a --synthesis-candidates run")
    ap.add_argument("--model", default="qwen-1.5b")
    a = ap.parse_args()
    qdir = RESULTS / "quality" / a.folder
    q = json.loads((qdir / "results.json").read_text())["args"]
    rec = json.loads((qdir / f"run-{a.model}" / "synthesis_candidates.json").read_text())
    task, train, val, test = load(
        q["dataset"], q["n_train"], q["n_val"], q["n_test"], q["seed"], q.get("max_chars", 1200)
    )
    s_spec, cache = spec(a.model, q["dataset"]), Cache(RESULTS / "quality" / "cache.sqlite")
    gold = {e.id: e.label for e in test}
    rows: list[dict[str, Any]] = []
    for c in rec["candidates"]:
        cal = choice_reading(c)
        prompt = render_layout(DEFAULT_LAYOUT, task, InstructionSet.from_json(c["instruction_set"]))
        kw: dict[str, Any] = {"train": train, "seed": q["seed"], "calibrate": cal}
        name = f"candidate-{c['candidate']}"
        v = score(s_spec, f"val {name}", name, task, val, cache, prompt, **kw)
        t = score(s_spec, f"test {name}", name, task, test, cache, prompt, **kw)
        rows.append(
            {
                "candidate": c["candidate"],
                "chosen": c["chosen"],
                "calibrate": cal,
                "val_recorded": c["score"],
                "val_now": v["macro_f1"],
                "test": {k: t[k] for k in ("n", "macro_f1", "macro_f1_ci95", "accuracy")},
                "_pred": t["_pred"],
            }
        )
    first = recorded_predictions(rows[0]["_pred"], gold)
    print("| candidate | validation (recorded / now) | test macro-F1 | − candidate 0, paired |")
    print("|---|---|---|---|")
    for r in rows:
        d = paired_bootstrap_diff(recorded_predictions(r["_pred"], gold), first, task.labels)
        r["minus_candidate_0"] = d
        print(
            f"| {r['candidate']}{' (chosen)' if r['chosen'] else ''} | {r['val_recorded']:.3f} / "
            f"{r['val_now']:.3f} | {r['test']['macro_f1']:.3f} | {paired_text(d)} |",
            flush=True,
        )
    save_json(
        qdir / "candidates.json",
        {"machine": machine(), "args": vars(a), "quality_args": q, "candidates": rows},
    )


if __name__ == "__main__":
    main()
