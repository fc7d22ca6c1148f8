"""How much of Contract-NLI's gold evidence survives pld's premise shortening.

    python -m bench.contract_evidence [--max-chars 1200] [--n-test 150]

The benchmark shortens each contract to ``--max-chars`` by the ``retrieve`` strategy (the
contract's own segments sharing most words with the hypothesis; never the gold spans). A
student cannot find evidence that was cut, so this is a ceiling on any method given those
premises, and a measured reason when every method scores low. Reads the same test sample as
``bench.quality --dataset contract-nli`` (same seed and size); prints, per gold label, how many
items keep all, some or none of their evidence segments. No model call.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from bench.common import SHARED_DATA
from bench.quality import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-chars", type=int, default=1200)
    ap.add_argument("--n-test", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
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


if __name__ == "__main__":
    main()
