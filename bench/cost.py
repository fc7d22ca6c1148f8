"""Distillation cost and scaling.

    python -m bench.cost [--sizes 50,100,200] [--cluster-sizes 1000,2000,5000,10000,20000]

1. Teacher calls, tokens and wall time per phase for N training examples (StereoSet
   intrasentence, stereotype scheme; the embedded SmolLM2 as teacher, student and embedder so
   it runs offline), each N with its own fresh cache; a least-squares fit of extraction cost
   against N.
2. The cache effect: the smallest N run again on its cache costs zero model calls.
3. Clustering alone on synthetic rule embeddings up to 20,000 rules, each size in its own
   process: wall time and peak memory, beside what a dense n*n distance matrix would need.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, SHARED_DATA, machine, save
from pld.cache import Cache
from pld.config import DistillConfig
from pld.distiller import Distiller
from pld.rulebook import Rulebook
from pld.tasks.base import stratified_split
from pld.tasks.datasets import load_stereoset


def distill_once(n: int, cache: Path, run: Path) -> dict[str, Any]:
    task = load_stereoset(SHARED_DATA / "stereoset" / "stereoset.json")
    sp = stratified_split(task.examples, fractions=(0.5, 0.25, 0.25), seed=0)
    # the ``small`` preset with one round and the default resolve sample sizes
    cfg = DistillConfig.preset(
        "small", max_train=n, max_rounds=1, resolve_failures=12, resolve_successes=6
    )
    d = Distiller("local:smollm2", "local:smollm2", "local:smollm2", config=cfg, cache=Cache(cache))
    t0 = time.perf_counter()
    d.fit(task.with_examples(sp.train), task.with_examples(sp.val[:30]), run_dir=run, force=True)
    wall = time.perf_counter() - t0
    meta = Rulebook.load(run).run_info
    phases = {}
    for ph, roles in meta["usage_by_phase"].items():
        if ph == "-":
            continue
        phases[ph] = {
            "wall_s": meta["phases"].get(ph, {}).get("wall_time_s"),
            **{
                f"{r}_{k}": v[k]
                for r, v in roles.items()
                for k in ("calls", "cache_hits", "prompt_tokens", "completion_tokens")
            },
        }
    return {
        "n": n,
        "wall_s": wall,
        "phases": phases,
        "rules": len(d.rules_),
        "failed": len(d.extraction_failures_),
        "instructions": len(d.instructions_),
    }


def fit_line(xs: list[float], ys: list[float]) -> dict[str, float]:
    a, b = np.polyfit(xs, ys, 1)
    pred = np.polyval([a, b], xs)
    ss_res = float(np.sum((np.asarray(ys) - pred) ** 2))
    ss_tot = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2)) or 1.0
    return {"slope": float(a), "intercept": float(b), "r2": 1 - ss_res / ss_tot}


CLUSTER = r"""
import json, sys, time, tracemalloc
import numpy as np
from pld.phases.synthesize import cluster_rules


def hwm_mb():  # this process's own peak RSS (ru_maxrss would include the parent's, pre-exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


n = int(sys.argv[1]); rng = np.random.default_rng(0)
centers = rng.normal(size=(max(4, n // 200), 576))
x = (centers[rng.integers(0, len(centers), n)]
     + 0.35 * rng.normal(size=(n, 576))).astype("float32")
base = hwm_mb()
tracemalloc.start()
t0 = time.perf_counter(); r = cluster_rules(x, eps=0.4, min_samples=6, auto_eps=False)
dt = time.perf_counter() - t0
_, traced_peak = tracemalloc.get_traced_memory()
print(json.dumps({"n": n, "seconds": dt, "peak_rss_mb": hwm_mb(), "rss_before_mb": base,
                  "traced_peak_mb": traced_peak / 2**20, "clusters": r.n_clusters,
                  "dense_matrix_mb": n * n * 8 / 2**20}))
"""


def clustering(sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        r = subprocess.run(
            [sys.executable, "-c", CLUSTER, str(n)], capture_output=True, text=True, timeout=3600
        )
        row = json.loads(r.stdout.strip().splitlines()[-1])
        print("cluster", row, flush=True)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="50,100,200")
    ap.add_argument("--cluster-sizes", default="1000,2000,5000,10000,20000")
    ap.add_argument(
        "--only-clustering",
        action="store_true",
        help="rerun section 3 only, keeping the saved distillation results",
    )
    a = ap.parse_args()
    if a.only_clustering:
        res0 = json.loads((RESULTS / "cost.json").read_text())
        res0["clustering"] = clustering([int(x) for x in a.cluster_sizes.split(",")])
        res0["clustering_machine"] = machine()
        print("saved", save("cost", res0))
        return
    sizes = [int(x) for x in a.sizes.split(",")]
    res: dict[str, Any] = {"machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for n in sizes:
            row = distill_once(n, t / f"cache-{n}.sqlite", t / f"run-{n}")
            print("distill", json.dumps(row), flush=True)
            res["runs"].append(row)
            save("cost", res)
        ext = [r["phases"]["extract"] for r in res["runs"]]
        ns = [float(r["n"]) for r in res["runs"]]
        res["extract_fit"] = {
            "calls": fit_line(ns, [float(e["teacher_calls"]) for e in ext]),
            "tokens": fit_line(
                ns,
                [float(e["teacher_prompt_tokens"] + e["teacher_completion_tokens"]) for e in ext],
            ),
            "wall_s": fit_line(ns, [float(e["wall_s"] or 0) for e in ext]),
        }
        again = distill_once(sizes[0], t / f"cache-{sizes[0]}.sqlite", t / "run-again")
        res["cache_effect"] = {
            "n": sizes[0],
            "model_calls": sum(
                v for p in again["phases"].values() for k, v in p.items() if k.endswith("_calls")
            ),
            "cache_hits": sum(
                v
                for p in again["phases"].values()
                for k, v in p.items()
                if k.endswith("_cache_hits")
            ),
            "wall_s": again["wall_s"],
        }
        print("cache", res["cache_effect"], flush=True)
    res["clustering"] = clustering([int(x) for x in a.cluster_sizes.split(",")])
    print("saved", save("cost", res))


if __name__ == "__main__":
    main()
