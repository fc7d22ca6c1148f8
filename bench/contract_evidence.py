"""How much of Contract-NLI's gold evidence survives pld's premise shortening, and how much
signal a run's student scores carry.

    python -m bench.contract_evidence [--max-chars 1200] [--n-test 300] [--run RUN_DIR]

The benchmark shortens each contract to ``--max-chars`` by the ``retrieve`` strategy (the
contract's own segments sharing most words with the hypothesis; never the gold spans). A
student cannot find evidence that was cut, so this is a ceiling on any method given those
premises, and a measured reason when every method scores low. Reads the same test sample as
``bench.quality --dataset contract-nli`` (same seed and size); prints, per gold label, how many
items keep all, some or none of their evidence segments. No model call.

With ``--run`` (a finished run directory), it also reads the run's validation predictions
(``predictions_val.jsonl``, the kept decision's label distributions) and prints how many items
get the one label their hypothesis always gets, and the best macro-F1 any per-label bias on
those scores reaches on the same items — an oracle (fitted on what it scores), so an upper
bound on what a better decision rule could buy with this student.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from bench.common import SHARED_DATA
from bench.quality import load
from pld.metrics import macro_f1
from pld.predictions import Prediction

GRID = [x / 4 for x in range(-24, 25)]  # log-offsets -6..+6 in steps of 0.25


def student_signal(run: Path) -> None:
    preds = [
        Prediction.from_json(json.loads(x))
        for x in (run / "predictions_val.jsonl").read_text().splitlines()
    ]
    labels = sorted({lab for p in preds for lab in (p.scores or {})})
    by_hyp: defaultdict[str, list[str | None]] = defaultdict(list)
    for p in preds:
        by_hyp[p.id.split(":", 1)[1]].append(p.label)
    fixed = sum(len(v) for v in by_hyp.values() if len(set(v)) == 1)
    print(
        f"{run}: {len(preds)} validation items; predicted {dict(Counter(p.label for p in preds))}"
        f"; {fixed} items get the one label their hypothesis always gets"
    )
    best, best_off = -1.0, None
    for offs in itertools.product(GRID, repeat=len(labels) - 1):
        off = dict(zip(labels, (0.0, *offs), strict=True))
        moved = [
            replace(
                p,
                label=max(
                    labels, key=lambda lab: math.log(max((p.scores or {})[lab], 1e-12)) + off[lab]
                ),
            )
            for p in preds
        ]
        f = macro_f1(moved, labels)
        if f > best:
            best, best_off = f, off
    print(
        f"  macro-F1 as decided {macro_f1(preds, labels):.3f}; best per-label bias (oracle on "
        f"the same items) {best:.3f} with log-offsets {best_off}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-chars", type=int, default=1200)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", type=Path, help="a finished run directory to read")
    a = ap.parse_args()
    _, _, _, test = load("contract-nli", 1, 1, a.n_test, a.seed, a.max_chars)
    d = json.loads((SHARED_DATA / "contract_nli" / "test.json").read_text())
    docs = {str(doc["id"]): doc for doc in d["documents"]}
    kept: Counter[tuple[str, str]] = Counter()
    for e in test:
        doc_id, key = e.id.split(":", 1)
        doc = docs[doc_id]
        idx = doc["annotation_sets"][0]["annotations"][key]["spans"]
        segs = [doc["text"][doc["spans"][i][0] : doc["spans"][i][1]] for i in idx]
        if not segs:
            kept[(e.label, "no evidence (NotMentioned)")] += 1
            continue
        n_in = sum(1 for s in segs if s in e.fields["premise"])
        kept[(e.label, "all" if n_in == len(segs) else "some" if n_in else "none")] += 1
    print(f"contract-nli test sample n={len(test)}, premises <= {a.max_chars} chars (retrieve)")
    for (label, how), n in sorted(kept.items()):
        print(f"  {label:14s} evidence kept: {how:28s} {n}")
    if a.run is not None:
        student_signal(a.run)


if __name__ == "__main__":
    main()
