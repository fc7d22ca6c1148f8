"""What citing a rule costs (issue #14): per-item latency and decoded tokens with and without
``cite=True``, its effect on macro-F1, and citation consistency, on a fitted run.

    python -m bench.cite --run RUN_DIR --dataset demo --student smollm2
    python -m bench.cite --run bench/results/quality/stereoset-domain-frontier/run-qwen-1.5b \\
        --dataset stereoset-domain --student qwen-1.5b --n 120

Items: the run's own test split (``demo``: the demo's seeded test split; a bench dataset: the
test sample ``bench.quality`` scores, same seed). Each item is classified twice, uncached and
in alternation (plain, then cited), so the two latency series share the machine's load; the
ratio of their medians is the figure (this machine is shared: absolute times are not). A cited
answer runs the plain label call unchanged, then one closed choice over the rule numbers and
``none``; its label therefore cannot differ, and the bench checks that rather than assume it.
Consistency: the share of citations of a rule whose own labels contain the predicted label.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench.common import machine, save
from bench.quality import load, spec
from pld._async import run_sync
from pld.demo import demo_data
from pld.metrics import citation_summary, macro_f1
from pld.predictions import Prediction, as_items
from pld.rulebook import Rulebook
from pld.tasks.base import Example


def items_of(a: argparse.Namespace) -> list[Example]:
    if a.dataset == "demo":
        return list(demo_data()[1].test)[: a.n]
    _, _, _, test = load(a.dataset, 1, 1, a.n, a.seed, a.max_chars)
    return test


def _side(preds: list[Prediction], labels: tuple[str, ...]) -> dict[str, Any]:
    lat = [p.latency_s for p in preds]
    return {
        "macro_f1": macro_f1(preds, labels),
        "p50_latency_s": statistics.median(lat),
        "mean_completion_tokens": statistics.fmean(p.completion_tokens for p in preds),
        "mean_prompt_tokens": statistics.fmean(p.prompt_tokens for p in preds),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", required=True)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--student", default="smollm2")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chars", type=int, default=1200)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rb = Rulebook.load(a.run)
    items = items_of(a)
    client = rb.student_client(spec(a.student, a.dataset), concurrency=1)  # uncached
    plain: list[Prediction] = []
    cited: list[Prediction] = []
    prior = rb.prior if rb.calibrate else None  # as saved: measured once, like pld serve
    cprior = run_sync(rb.acite_prior(client))
    for e in items:  # alternate, so both series see the same load
        plain += run_sync(rb.apredict(as_items([e]), client, prior=prior))
        cited += run_sync(
            rb.apredict(as_items([e]), client, prior=prior, cite=True, cite_prior=cprior)
        )
    same = sum(p.label == c.label for p, c in zip(plain, cited, strict=True))
    rule_labels = {i.id: list(i.labels) for i in rb.instructions.instructions}
    res: dict[str, Any] = {
        "machine": machine(),
        "args": vars(a),
        "n": len(items),
        "rules": len(rb.instructions.instructions),
        "plain": _side(plain, rb.labels),
        "cited": _side(cited, rb.labels),
        "same_label": same,
        "citation": citation_summary(cited, rule_labels),
    }
    res["p50_latency_ratio"] = res["cited"]["p50_latency_s"] / res["plain"]["p50_latency_s"]
    out = save(a.out or f"cite-{a.dataset}", res)
    c = res["citation"]
    print(
        f"n={res['n']} rules={res['rules']}: p50 {res['plain']['p50_latency_s']:.3f}s -> "
        f"{res['cited']['p50_latency_s']:.3f}s (x{res['p50_latency_ratio']:.2f}); decoded "
        f"tokens/item {res['plain']['mean_completion_tokens']:.2f} -> "
        f"{res['cited']['mean_completion_tokens']:.2f}; macro-F1 "
        f"{res['plain']['macro_f1']:.3f} -> {res['cited']['macro_f1']:.3f} (same label "
        f"{same}/{res['n']}); cited {c['cited']}, none {c['none']}, invalid {c['invalid']}, "
        f"consistency {c['consistency']} (n={c['consistency_n']}); by rule {c['by_rule']}"
    )
    print("saved", out)


if __name__ == "__main__":
    main()
