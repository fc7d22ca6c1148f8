"""Peer: DSPy on the same split, student and teacher as ``bench.quality``, scored by pld.

    python -m bench.peer --dataset stereoset-domain --model qwen-1.5b

Runs after ``bench.quality`` for the same dataset (it reads that run's arguments, so the split,
the seed and the test items are identical). Starts one llama.cpp OpenAI-compatible server
(``python -m pld.serve``) with the model — it is both teacher and student, as in
``bench.quality`` — creates the separate DSPy environment ``.venv-dspy`` on first use
(``pip install "dspy[optuna]==3.4.1"``; DSPy never enters pld's environment), and runs
``bench/dspy_worker.py`` there: ``dspy.Predict`` zero-shot, then MIPROv2 ``auto="light"``
writing instructions (no demonstrations, the zero-shot form PLD produces). Beside it, pld
distils from its own empty cache (so its calls and tokens are a first run's) — ``--pld-only``
runs just that arm, e.g. in a second process. pld's metrics score every system on the same
items, with McNemar against that pld run, plus zero-shot and PLD with and without contextual
calibration (the ablation that explains the gap). DSPy's call/token counts come from its
history. Output: ``bench/results/quality/<dataset>/peer-dspy.json``. Resumable.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, machine
from bench.models import fetch
from bench.quality import distill_config, load, score, spec
from pld.cache import Cache
from pld.distiller import Distiller
from pld.evaluate import mcnemar_counts
from pld.metrics import summary
from pld.predictions import Prediction
from pld.rulebook import Rulebook
from pld.tasks.base import template_fields

DSPY_VERSION = "3.4.1"
VENV = ROOT / ".venv-dspy"


def dspy_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV} (once)", flush=True)
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(py), "-c", "import dspy, optuna"], capture_output=True).returncode:
        print(f"installing dspy[optuna]=={DSPY_VERSION} into {VENV}", flush=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", f"dspy[optuna]=={DSPY_VERSION}"], check=True
        )
    return py


def start_server(model_path: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pld.serve", "--model", str(model_path), "--ctx", "8192"],
        stdout=subprocess.PIPE,
        stderr=log.open("a"),
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise SystemExit(f"the llama.cpp server did not start (see {log})")
    return proc, line.split()[1]


def total_usage(run_json: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Usage per role summed over every process that worked on the run (resumes included)."""
    parts = [run_json["usage_by_role"]]
    parts += [p["usage_by_role"] for p in run_json.get("usage_earlier_processes", [])]
    out: dict[str, dict[str, float]] = {}
    for part in parts:
        for role, u in part.items():
            acc = out.setdefault(role, {})
            for k in ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "latency_s"):
                acc[k] = acc.get(k, 0) + u.get(k, 0)
    return out


def pld_arm(
    dataset: str,
    model: str,
    q: dict[str, Any],
    task: Any,
    train: list[Any],
    val: list[Any],
    test: list[Any],
    work: Path,
) -> dict[str, Any]:
    """pld from an empty cache of its own, so its cost is what a first run pays (bench.quality
    shares one cache across students and reruns, so its counts are not a first run's)."""
    done = work / "pld.json"
    with (work / "pld.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a --pld-only process may be on it: wait, then reuse
        if done.exists():
            return dict(json.loads(done.read_text()))
        run = work / "pld-run"
        cache = Cache(work / "pld-cache.sqlite")
        model_spec = spec(model, dataset)
        t0 = time.perf_counter()
        d = Distiller(
            model_spec,
            model_spec,
            "local:smollm2",
            cache=cache,
            config=distill_config(q["max_rounds"], q["seed"]),
        )
        resume = (run / "run.json").exists()
        d.fit(
            task.with_examples(train),
            task.with_examples(val),
            run_dir=run,
            resume=resume,
            force=not resume,
        )
        wall = time.perf_counter() - t0
        rulebook = Rulebook.load(run)
        prompt = rulebook.prompt
        r = score(model_spec, model, "pld", task, test, cache, prompt, train=train, seed=q["seed"])
        r["distill_wall_s_this_process"] = wall
        r["distill_resumed"] = resume
        r["distill_usage"] = total_usage(rulebook.run_info)
        r["instructions"] = len(d.instructions_)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(r, indent=2) + "\n")
        tmp.replace(done)
        return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="stereoset-domain")
    ap.add_argument("--model", default="qwen-1.5b", help="teacher and student, as in bench.quality")
    ap.add_argument("--teacher-max-tokens", type=int, default=600)
    ap.add_argument(
        "--pld-only", action="store_true", help="only the pld arm (to run beside the DSPy arm)"
    )
    a = ap.parse_args()
    qdir = RESULTS / "quality" / a.dataset
    qres_path = qdir / "results.json"
    if not qres_path.exists():
        raise SystemExit(f"run `python -m bench.quality --dataset {a.dataset}` first")
    qres = json.loads(qres_path.read_text())
    q = qres["args"]
    if a.model != q["teacher"] or a.model not in q["students"].split(","):
        raise SystemExit(f"{a.model} was not both teacher and student in {qres_path}")
    task, train, val, test = load(
        a.dataset, q["n_train"], q["n_val"], q["n_test"], q["seed"], q.get("max_chars", 1200)
    )
    work = qdir / "dspy"
    work.mkdir(exist_ok=True)
    if a.pld_only:
        pld_arm(a.dataset, a.model, q, task, train, val, test, work)
        return
    py = dspy_python()
    log = work / "log.txt"
    server, url = start_server(fetch(a.model), log)
    try:
        spec_path = work / "spec.json"  # quotes the dataset: git-ignored
        spec_path.write_text(
            json.dumps(
                {
                    "labels": list(task.labels),
                    "description": task.description,
                    "input_fields": template_fields(task.input_template),
                    "seed": q["seed"],
                    "cache_dir": str(work / "cache"),
                    "teacher_max_tokens": a.teacher_max_tokens,
                    "base_url": url,
                    **{
                        k: [{"id": e.id, "fields": dict(e.fields), "label": e.label} for e in part]
                        for k, part in (("train", train), ("val", val), ("test", test))
                    },
                }
            )
        )
        t0 = time.perf_counter()
        rc = subprocess.run(
            [
                str(py),
                str(ROOT / "bench" / "dspy_worker.py"),
                str(spec_path),
                str(work / "raw.json"),
            ],
        ).returncode
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    fresh = pld_arm(a.dataset, a.model, q, task, train, val, test, work)
    raw_path = work / "raw.json"
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    gold = {e.id: e.label for e in test}
    pld_ok = qres["students"][a.model]["methods"]["pld"]["_correct"]
    # Why pld and DSPy differ on the same student: the same calls scored with and without
    # pld's contextual calibration (a post-hoc transform: every call below is a cache hit but
    # the zero-shot ones, which are new to this cache).
    pcache, mspec = Cache(work / "pld-cache.sqlite"), spec(a.model, a.dataset)
    pld_prompt = Rulebook.load(work / "pld-run").prompt
    ablation = {
        f"{m}, {'calibrated' if cal else 'uncalibrated'}": score(
            mspec,
            a.model,
            m,
            task,
            test,
            pcache,
            pld_prompt if m == "pld" else None,
            train=train,
            seed=q["seed"],
            calibrate=cal,
        )
        for m in ("zero-shot", "pld")
        for cal in (True, False)
    }
    out: dict[str, Any] = {
        "machine": machine(),
        "args": vars(a),
        "dspy": DSPY_VERSION,
        "worker_wall_s_this_process": wall,
        "worker_exit_code": rc,
        "failed_attempts": raw.get("dspy-miprov2-attempts", []),
        "methods": {},
        "pld_fresh": fresh,
        "calibration_ablation": ablation,
    }
    for name, r in raw.items():
        if not isinstance(r, dict) or "preds" not in r:
            continue
        preds = [
            Prediction(
                p["id"],
                p["label"] if p["label"] in task.labels else None,
                p["error"],
                None,
                p["latency_s"],
                0,
                0,
                0,
                False,
                gold[p["id"]],
            )
            for p in r["preds"]
        ]
        s = summary(preds, task.labels)
        s["wall_s"] = r["wall_s"]
        s["usage"] = r["usage"]
        s["errors"] = sum(1 for p in r["preds"] if p["error"])
        for k in ("compile", "instructions"):
            if k in r:
                s[k] = r[k]
        ok = {p.id: p.correct for p in preds}
        s["mcnemar_vs_pld"] = mcnemar_counts(ok, pld_ok)
        s["mcnemar_vs_pld_fresh"] = mcnemar_counts(ok, fresh["_correct"])
        out["methods"][name] = s
        print(
            f"{name}: macro-F1 {s['macro_f1']:.3f} [{s['macro_f1_ci95'][0]:.2f}, "
            f"{s['macro_f1_ci95'][1]:.2f}] n={s['n']} invalid={s['invalid']}",
            flush=True,
        )
    dst = qdir / "peer-dspy.json"
    tmp = dst.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(dst)
    print("saved", dst)
    if rc:
        raise SystemExit(f"the DSPy worker failed (exit {rc}); see the output above and {log}")


if __name__ == "__main__":
    main()
