"""Peer: DSPy on the same split and student as ``bench.quality``, scored by pld.

Two modes, each reading a ``bench.quality`` run's arguments (so the split, the seed and the
test items are identical) and writing ``peer-dspy.json`` beside its ``results.json``.

Local teacher (``bench/results/quality/<dataset>/``):

    python -m bench.peer --dataset stereoset-domain --model qwen-1.5b

Starts one llama.cpp OpenAI-compatible server (``python -m pld.serve``) with the model — it
is both teacher and student, as in ``bench.quality`` — creates the separate DSPy environment
``.venv-dspy`` on first use (``pip install "dspy[optuna]==3.4.1"``, which brings ``gepa`` 0.1.4;
DSPy never enters pld's environment), and runs ``bench/dspy_worker.py`` there: ``dspy.Predict``
zero-shot, then MIPROv2 ``auto="light"`` writing instructions (no demonstrations, the
zero-shot form PLD produces). Beside it, pld distils from its own empty cache (so its calls
and tokens are a first run's) — ``--pld-only`` runs just that arm, e.g. in a second process.
pld's metrics score every system on the same items, with McNemar against that pld run, plus
zero-shot and PLD with and without contextual calibration (the ablation that explains the
gap). DSPy's call/token counts come from its history.

Frontier teacher (``bench/results/quality/<dataset>-frontier/``, after
``python -m bench.quality --dataset <dataset> --teacher frontier --students qwen-1.5b``):

    python -m bench.peer --dataset stereoset-domain --teacher frontier [--gepa-budget 126] \
        [--arms predict,miprov2,gepa,miprov2-budget]

DSPy's optimizers get the same frontier teacher as pld: a ``bench.teacher_endpoint`` on
``<dataset>-frontier/dspy-teacher/`` (a transcript of its own; answer the files that appear in
its ``pending/``), used as MIPROv2's ``prompt_model`` and GEPA's ``reflection_lm``; the
student stays the llama.cpp server. GEPA writes instructions only and stops after
``--gepa-budget`` teacher calls (default: as many as pld's teacher answered, i.e. at least
pld's budget; ``--gepa-max-metric-calls`` caps its student rollouts). MIPROv2 runs twice:
``miprov2`` is its ``auto="light"`` preset (6 instruction candidates, ~28 teacher calls), and
``miprov2-budget`` spends the same budget on instruction candidates (``mipro_at_budget``),
with the trials DSPy recommends for that many. pld is not distilled
again: its arm is the frontier run's own rulebook (``run-<model>``) and its recorded ``pld``
answers, with its teacher cost from that run's transcript and usage — a "fresh pld from an
empty cache" arm would only replay the recorded teacher. Every system (and the run's
zero-shot, few-shot and CoT rows) is compared with pld on the same items: McNemar and the
paired bootstrap CI of the macro-F1 difference. After the worker, ``check_no_test_items``
checks the DSPy teacher's transcript (the optimizers see training and validation items
only); a request quoting a test item fails the run.

Resumable in both modes (rerun the same command). ``--arms`` stages a long frontier run
(e.g. ``--arms predict,miprov2`` now, ``--arms gepa`` later): arms already finished are kept in
``dspy/raw.json`` (committed, with GEPA's checkpoint ``dspy/gepa/``, so a fresh checkout
resumes too) and reported each time. A GEPA search of pld's budget outlasts a sitting:
``touch <dataset>-frontier/dspy/gepa/PAUSE`` pauses it at its next iteration (its calls on
record, the command exits 0 saying so); the next run of the command removes the file and
resumes the search.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, machine, stop_process, write_json
from bench.dspy_worker import OPTIMIZERS, PAUSED_EXIT
from bench.models import fetch
from bench.quality import FRONTIER, distill_config, load, score, spec
from bench.teacher_endpoint import TeacherEndpoint, check_no_test_items, transcript_cost
from pld.cache import Cache
from pld.distiller import Distiller
from pld.evaluate import mcnemar_counts
from pld.metrics import paired_bootstrap_diff, summary
from pld.phases.classify import parse_label
from pld.predictions import Prediction
from pld.rulebook import Rulebook
from pld.tasks.base import Example, Task, template_fields

DSPY_VERSION = "3.4.1"
VENV = ROOT / ".venv-dspy"
# Baselines of the frontier bench.quality run shown beside pld and DSPy (same student, items).
QUALITY_BASELINES = (
    "zero-shot",
    "zero-shot-raw",
    "zero-shot-fitted",
    "few-shot",
    "few-shot-raw",
    "cot",
)
# A frontier teacher's call is held open until its answer file exists: hours, never retried.
FRONTIER_TIMEOUT_S = 24 * 3600


def dspy_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV} (once)", flush=True)
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(py), "-c", "import dspy, gepa, optuna"], capture_output=True).returncode:
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
        write_json(done, r)
        return r


ARMS = ("predict", "miprov2", "gepa", "miprov2-budget")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="stereoset-domain")
    ap.add_argument(
        "--model",
        default="qwen-1.5b",
        help="the student (and, without --teacher, also the teacher), as in bench.quality",
    )
    ap.add_argument(
        "--teacher",
        choices=[FRONTIER],
        help="frontier: DSPy's optimizers ask the frontier teacher through "
        "bench.teacher_endpoint, compared with the bench.quality --teacher frontier run",
    )
    ap.add_argument(
        "--teacher-max-tokens",
        type=int,
        help="reply limit asked of the teacher (default 600 for a local teacher, 2000 for "
        "the frontier one)",
    )
    ap.add_argument(
        "--gepa-budget",
        type=int,
        help="frontier only: GEPA stops after this many teacher calls, and the miprov2-budget "
        "arm sizes its candidates to it (default and minimum: the teacher requests pld's "
        "frontier run used)",
    )
    ap.add_argument(
        "--gepa-max-metric-calls",
        type=int,
        default=8000,
        help="frontier only: cap on GEPA's student rollouts, reached only if its minibatches "
        "keep scoring perfectly (no teacher call then)",
    )
    ap.add_argument(
        "--pld-only", action="store_true", help="only the pld arm (to run beside the DSPy arm)"
    )
    ap.add_argument(
        "--arms",
        default=",".join(ARMS),
        help="frontier only: the DSPy systems to run this time, in order (comma-separated, "
        f"from {', '.join(ARMS)}); finished arms are kept, so a long run can be staged",
    )
    a = ap.parse_args(argv)
    a.arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    unknown = sorted(set(a.arms) - set(ARMS))
    if unknown or not a.arms:
        ap.error(f"--arms takes names from {', '.join(ARMS)} (got {', '.join(unknown) or 'none'})")
    if a.teacher != FRONTIER and a.arms != list(ARMS):
        ap.error("--arms needs --teacher frontier (the local mode runs predict and miprov2)")
    if a.teacher != FRONTIER and a.gepa_budget is not None:
        ap.error("--gepa-budget needs --teacher frontier (GEPA runs in the frontier mode only)")
    if a.teacher == FRONTIER and a.pld_only:
        ap.error("--pld-only is for the local mode: the frontier mode reuses pld's recorded run")
    if a.teacher_max_tokens is None:
        a.teacher_max_tokens = 2000 if a.teacher == FRONTIER else 600
    return a


def main() -> None:
    # `kill` (SIGTERM, the default) would end this process without its `finally` blocks and
    # leave the student server and the DSPy worker running, orphaned; as SystemExit it stops
    # both (subprocess.run kills the worker on the way out).
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    a = parse_args()
    if a.teacher == FRONTIER:
        frontier_main(a)
    else:
        local_main(a)


def write_spec(
    work: Path,
    task: Task,
    seed: int,
    parts: Mapping[str, list[Example]],
    student_url: str,
    teacher: Mapping[str, Any],
    gepa: Mapping[str, Any] | None = None,
    arms: Sequence[str] = ARMS,
    mipro_budget: Mapping[str, Any] | None = None,
) -> Path:
    """The worker's whole input; it quotes the dataset, so it is git-ignored."""
    spec_path = work / "spec.json"
    body: dict[str, Any] = {
        "labels": list(task.labels),
        "description": task.description,
        "input_fields": template_fields(task.input_template),
        "seed": seed,
        "cache_dir": str(work / "cache"),
        # committed (the cache is not): see dspy_worker.CacheRecording
        "cache_recording": str(work / "cache.jsonl"),
        "base_url": student_url,
        "teacher": dict(teacher),
        "arms": list(arms),
        **{
            k: [{"id": e.id, "fields": dict(e.fields), "label": e.label} for e in part]
            for k, part in parts.items()
        },
    }
    if gepa is not None:
        body["gepa"] = dict(gepa)
    if mipro_budget is not None:
        body["miprov2_budget"] = dict(mipro_budget)
    spec_path.write_text(json.dumps(body))
    return spec_path


def run_worker(py: Path, spec_path: Path, raw_path: Path) -> tuple[int, float]:
    """The worker in its own environment. Stopped (this process ending on SIGTERM, the end of
    a sitting) with SIGTERM and a grace period, not ``subprocess.run``'s SIGKILL, so it saves
    its last usage and its cache recording (``dspy_worker.main``) before it exits."""
    t0 = time.perf_counter()
    proc: subprocess.Popen[str] = subprocess.Popen(
        [str(py), str(ROOT / "bench" / "dspy_worker.py"), str(spec_path), str(raw_path)],
        text=True,
    )
    try:
        rc = proc.wait()
    finally:
        stop_process(proc)
    return rc, time.perf_counter() - t0


def failed_attempts(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every optimizer attempt that died, tagged with its optimizer."""
    return [
        {"optimizer": name, **att} for name in OPTIMIZERS for att in raw.get(f"{name}-attempts", [])
    ]


def carried_over(
    prev: Mapping[str, Any], raw_before: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the last ``peer-dspy.json`` holds that the worker's state no longer does.

    ``raw.json`` and GEPA's checkpoint were once left out of git, so a fresh checkout lost them
    while the committed ``peer-dspy.json`` kept the finished arms' scored rows. Those rows are
    kept as they were scored (pld's recorded answers, to which each is compared, do not
    change) rather than re-running the student for them. An unfinished optimizer's attempts
    whose record is gone belonged to a search that must restart: they stay on record as
    ``lost_attempts``, their calls paid but no longer part of the search."""
    methods = {m: r for m, r in prev.get("methods", {}).items() if m not in raw_before}
    lost = list(prev.get("lost_attempts", []))
    lost += [
        {**a, "lost": "the worker's state (raw.json, gepa/) was not kept; the search restarted"}
        for a in prev.get("failed_attempts", [])
        if a.get("optimizer") not in raw_before
        and f"{a.get('optimizer')}-attempts" not in raw_before
    ]
    return methods, lost


def dspy_predictions(r: Mapping[str, Any], task: Task, gold: Mapping[str, str]) -> list[Prediction]:
    return [
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


_FIELD = re.compile(r"\[\[\s*##\s*label\s*##\s*\]\]\s*(.*?)\s*(?:\[\[|$)", re.S)
_JSON_LABEL = re.compile(r'"label"\s*:\s*"([^"]*)"')


def lenient_label(replies: Sequence[str], labels: Sequence[str]) -> str | None:
    """What a forgiving reader takes from replies DSPy could not parse: the ``label`` field's
    text (ChatAdapter's marker or the JSON fallback's key) without leading ``=``/``:``, read
    by pld's own label parser. DSPy itself scores such a reply as no answer."""
    for reply in replies:
        m = _FIELD.search(reply) or _JSON_LABEL.search(reply)
        if m:
            found = parse_label(m.group(1).lstrip("=: \t"), labels)
            if found is not None:
                return found
    return None


def with_lenient_readings(
    raw: Mapping[str, Any], labels: Sequence[str]
) -> list[tuple[str, Mapping[str, Any]]]:
    """Every DSPy system as DSPy scores it, and, where some replies failed DSPy's parse but
    carry a label, the same system read leniently (``<name>-lenient``): the two rows separate
    the prompt DSPy wrote from the output frame the student could not keep."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    for name, r in raw.items():
        if not isinstance(r, dict) or "preds" not in r:
            continue
        out.append((name, r))
        read, recovered = [], False
        for p in r["preds"]:
            label = lenient_label(p.get("replies", []), labels)
            recovered |= label is not None
            read.append({**p, "label": label, "error": ""} if label is not None else p)
        if recovered:
            out.append((f"{name}-lenient", {**r, "preds": read}))
    return out


def dspy_methods(
    raw: Mapping[str, Any],
    task: Task,
    test: list[Example],
    against: Mapping[str, Mapping[str, bool]],
    paired_with: list[Prediction] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each DSPy system scored by pld's metrics, with McNemar against each ``against`` run
    (``mcnemar_vs_<key>``) and, given ``paired_with`` (pld's answers), the paired bootstrap
    CI of pld's macro-F1 minus the system's."""
    gold = {e.id: e.label for e in test}
    methods: dict[str, dict[str, Any]] = {}
    for name, r in with_lenient_readings(raw, task.labels):
        preds = dspy_predictions(r, task, gold)
        s = summary(preds, task.labels)
        s["wall_s"] = r["wall_s"]
        s["usage"] = r["usage"]
        s["errors"] = sum(1 for p in r["preds"] if p["error"])
        for k in ("compile", "instructions"):
            if k in r:
                s[k] = r[k]
        ok = {p.id: p.correct for p in preds}
        for key, other in against.items():
            s[f"mcnemar_vs_{key}"] = mcnemar_counts(ok, other)
        if paired_with is not None:
            s["_correct"] = ok
            s["_pred"] = {p.id: p.label for p in preds}
            s["pld_minus_this"] = paired_bootstrap_diff(paired_with, preds, task.labels)
        methods[name] = s
        print(
            f"{name}: macro-F1 {s['macro_f1']:.3f} [{s['macro_f1_ci95'][0]:.2f}, "
            f"{s['macro_f1_ci95'][1]:.2f}] n={s['n']} invalid={s['invalid']}",
            flush=True,
        )
    return methods


def save_json(dst: Path, out: Mapping[str, Any]) -> None:
    write_json(dst, out)
    print("saved", dst)


def local_main(a: argparse.Namespace) -> None:
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
        teacher = {
            "model": "openai/teacher",
            "base_url": url,
            "num_retries": 3,
            "max_tokens": a.teacher_max_tokens,
        }
        parts = {"train": train, "val": val, "test": test}
        spec_path = write_spec(work, task, q["seed"], parts, url, teacher)
        rc, wall = run_worker(py, spec_path, work / "raw.json")
    finally:
        stop_process(server)
    fresh = pld_arm(a.dataset, a.model, q, task, train, val, test, work)
    raw_path = work / "raw.json"
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
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
        "failed_attempts": failed_attempts(raw),
        "methods": dspy_methods(raw, task, test, {"pld": pld_ok, "pld_fresh": fresh["_correct"]}),
        "pld_fresh": fresh,
        "calibration_ablation": ablation,
    }
    save_json(qdir / "peer-dspy.json", out)
    if rc:
        raise SystemExit(f"the DSPy worker failed (exit {rc}); see the output above and {log}")


def check_frontier_run(qres: Mapping[str, Any], model: str, path: Path) -> None:
    """The frontier bench.quality run must be finished for ``model`` before DSPy is compared
    with it (its pld answers and rulebook are the pld arm)."""
    q = qres.get("args", {})
    if q.get("teacher") != FRONTIER:
        raise SystemExit(f"{path} is not a --teacher {FRONTIER} run (teacher {q.get('teacher')})")
    if model not in str(q.get("students", "")).split(","):
        raise SystemExit(
            f"{model} was no student in {path}; pass --model one of {q.get('students')}"
        )
    st = qres.get("students", {}).get(model, {})
    if "_correct" not in st.get("methods", {}).get("pld", {}) or "distill" not in st:
        raise SystemExit(
            f"{path} has no finished pld row for {model}: rerun `python -m bench.quality "
            f"--dataset {q.get('dataset')} --teacher {FRONTIER} --students {model}` to finish it"
        )


def check_same_items(
    pld_ids: Iterable[str], test_ids: Iterable[str], qres: Path, raw: Path, ds: str, model: str
) -> None:
    """DSPy's arms are compared with pld on the same items only: a test set grown since pld's
    row was scored (``--n-test``) waits for bench.quality to score pld on it too."""
    have, want = set(pld_ids), set(test_ids)
    if have != want:
        raise SystemExit(
            f"pld's row in {qres} is on {len(have)} items, the test set on {len(want)}: the "
            f"DSPy arms' answers are saved in {raw}; finish `python -m bench.quality --dataset "
            f"{ds} --teacher {FRONTIER} --students {model} --n-test {len(want)}`, then rerun "
            "this command (it replays them)"
        )


def gepa_budget(requested: int | None, pld_requests: int) -> int:
    """GEPA's budget in teacher calls: at least what pld's teacher answered (issue #13)."""
    if requested is None:
        return pld_requests
    if requested < pld_requests:
        raise SystemExit(
            f"--gepa-budget {requested} is below pld's {pld_requests} teacher requests; "
            f"DSPy gets at least pld's budget: pass {pld_requests} or more"
        )
    return requested


# MIPROv2's teacher calls in instruction-only mode (DSPy 3.4.1, measured on the three frontier
# transcripts): ~10 fixed (dataset observations and their summary) and 3 per instruction
# candidate (describe the program, describe the module, write the instruction).
MIPRO_CALLS_PER_CANDIDATE = 3


def mipro_at_budget(budget: int) -> dict[str, int]:
    """MIPROv2 given pld's teacher budget (issue #13): ``auto="light"`` proposes 6 instructions
    (~28 teacher calls) whatever the budget, and MIPROv2 has no stop condition in teacher
    calls, so the budget goes into instruction candidates — enough that the per-candidate
    calls alone reach it — and the trials are DSPy's own recommendation for that many
    candidates (the figure its error message suggests: max(2·log2 N, 1.5·N) for one
    predictor without demonstrations)."""
    n = math.ceil(budget / MIPRO_CALLS_PER_CANDIDATE)
    trials = int(max(2 * math.log2(n), 1.5 * n))
    return {"teacher_call_budget": budget, "num_candidates": n, "num_trials": trials}


def item_texts(task: Task, items: Iterable[Example]) -> list[str]:
    """What of an item a teacher request could quote: the rendered input and each input field
    (DSPy sends fields one by one, never pld's rendered template)."""
    names = template_fields(task.input_template)
    out: list[str] = []
    for e in items:
        out.append(task.render(e))
        out += [str(e.fields[n]) for n in names]
    return out


def frontier_pld(qres: Mapping[str, Any], qdir: Path, model: str) -> dict[str, Any]:
    """pld's arm from the frontier bench.quality run: its rulebook, its recorded answers on
    the test items and what its teacher and student cost (no model call)."""
    st = qres["students"][model]
    run = qdir / f"run-{model}"
    rb = Rulebook.load(run)
    r = dict(st["methods"]["pld"])
    if r.get("system_prompt_chars", len(rb.prompt.system)) != len(rb.prompt.system):
        raise SystemExit(
            f"{run} is not the rulebook {qdir / 'results.json'} scored (system prompts of "
            f"{len(rb.prompt.system)} and {r['system_prompt_chars']} chars): rerun bench.quality"
        )
    usage = st["distill"]["usage_by_role"]
    teacher_usage = usage.get("teacher", {})
    transcript = transcript_cost(qdir / "teacher")
    # The transcript counts what the teacher answered even when the fit later replayed it from
    # the cache (a --teacher-only process first); without one, the run's own usage.
    requests = transcript["requests"] or int(
        teacher_usage.get("calls", 0) + teacher_usage.get("cache_hits", 0)
    )
    r.update(
        rulebook=str(run.relative_to(ROOT)),
        instructions=len(rb.instructions),
        decision_used=(rb.decision or {}).get("used"),
        distill_usage=usage,
        distill_wall_s_last_process=st["distill"].get("wall_s_this_process"),
        teacher={**transcript, "requests": requests},
    )
    return r


def quality_baselines(
    qres: Mapping[str, Any], model: str, labels: tuple[str, ...], pld: list[Prediction]
) -> dict[str, dict[str, Any]]:
    """The frontier run's student baselines, each paired with pld on the items both scored."""
    methods = qres["students"][model]["methods"]
    pld_ok = methods["pld"]["_correct"]
    gold = {p.id: p.gold or "" for p in pld}
    out = {}
    for m in QUALITY_BASELINES:
        if m not in methods:
            continue
        r = {k: v for k, v in methods[m].items() if k != "mcnemar_vs_pld"}
        preds = recorded_predictions(r["_pred"], gold)
        r["mcnemar_vs_pld"] = mcnemar_counts(r["_correct"], pld_ok)
        r["pld_minus_this"] = paired_bootstrap_diff(pld, preds, labels)
        out[m] = r
    return out


def recorded_predictions(
    pred: Mapping[str, str | None], gold: Mapping[str, str]
) -> list[Prediction]:
    return [Prediction(i, lab, "", None, 0.0, 0, 0, 0, False, gold[i]) for i, lab in pred.items()]


def run_frontier_worker(
    a: argparse.Namespace,
    task: Task,
    seed: int,
    parts: dict[str, list[Example]],
    budget: int,
    work: Path,
    teacher_dir: Path,
) -> tuple[int, float]:
    """The DSPy worker, with the llama.cpp student (its log: ``work/log.txt``) and the frontier
    teacher's answer endpoint (``teacher_dir``) up for as long as it runs: its exit code and
    wall time."""
    py = dspy_python()  # before the server: a missing DSPy environment fails fast
    server, url = start_server(fetch(a.model), work / "log.txt")
    try:
        with TeacherEndpoint(teacher_dir) as ep:
            print(f"frontier teacher for DSPy: answer files in {teacher_dir}/pending", flush=True)
            teacher = {
                "model": f"openai/{FRONTIER}",
                "base_url": ep.base_url,
                "num_retries": 0,
                "timeout_s": FRONTIER_TIMEOUT_S,
                "max_tokens": a.teacher_max_tokens,
            }
            gepa = {
                "teacher_calls": budget,
                "max_metric_calls": a.gepa_max_metric_calls,
                "log_dir": str(work / "gepa"),
            }
            mipro = mipro_at_budget(budget)
            spec_path = write_spec(work, task, seed, parts, url, teacher, gepa, a.arms, mipro)
            return run_worker(py, spec_path, work / "raw.json")
    finally:
        stop_process(server)


def frontier_main(a: argparse.Namespace) -> None:
    qdir = RESULTS / "quality" / f"{a.dataset}-frontier"
    qres_path = qdir / "results.json"
    if not qres_path.exists():
        raise SystemExit(
            f"run `python -m bench.quality --dataset {a.dataset} --teacher {FRONTIER} "
            f"--students {a.model}` first"
        )
    qres = json.loads(qres_path.read_text())
    check_frontier_run(qres, a.model, qres_path)
    q = qres["args"]
    task, train, val, test = load(
        a.dataset, q["n_train"], q["n_val"], q["n_test"], q["seed"], q.get("max_chars", 1200)
    )
    pld = frontier_pld(qres, qdir, a.model)
    budget = gepa_budget(a.gepa_budget, pld["teacher"]["requests"])
    gold = {e.id: e.label for e in test}
    pld_preds = recorded_predictions(pld["_pred"], gold)
    work, teacher_dir = qdir / "dspy", qdir / "dspy-teacher"
    work.mkdir(exist_ok=True)
    pause = work / "gepa" / "PAUSE"
    if pause.exists():  # left by the pause that ended the last run: this run resumes
        pause.unlink()
        print(f"removed {pause}: resuming", flush=True)
    raw_path = work / "raw.json"
    prev_path = qdir / "peer-dspy.json"
    prev = json.loads(prev_path.read_text()) if prev_path.exists() else {}
    kept, lost = carried_over(prev, json.loads(raw_path.read_text()) if raw_path.exists() else {})
    for m in kept:
        print(f"{m}: kept as scored in {prev_path.name} (not in {raw_path.name})", flush=True)
    log = work / "log.txt"
    # the optimizers get train and val; test goes to the worker for the student only
    parts = {"train": train, "val": val, "test": test}
    rc, wall = run_frontier_worker(a, task, q["seed"], parts, budget, work, teacher_dir)
    # the worker's answers are saved (raw.json, the DSPy cache): only the comparison waits
    check_same_items(pld["_correct"], gold, qres_path, raw_path, a.dataset, a.model)
    transcript = check_no_test_items(
        teacher_dir, item_texts(task, test), item_texts(task, [*train, *val])
    )
    transcript["cost"] = transcript_cost(teacher_dir)
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    out: dict[str, Any] = {
        "machine": machine(),
        "args": vars(a),
        "quality_args": q,
        "dspy": DSPY_VERSION,
        "gepa_teacher_call_budget": budget,
        "worker_wall_s_this_process": wall,
        "worker_exit_code": rc,
        "failed_attempts": failed_attempts(raw),
        "lost_attempts": lost,
        "dspy_teacher_transcript": transcript,
        "pld_frontier": pld,
        "quality_baselines": quality_baselines(qres, a.model, task.labels, pld_preds),
        "methods": {
            **kept,
            **dspy_methods(raw, task, test, {"pld": pld["_correct"]}, pld_preds),
        },
    }
    save_json(prev_path, out)
    leaks = transcript["quoting_test_items"]
    if leaks:
        raise SystemExit(
            f"{len(leaks)} DSPy teacher requests quote a test item ({', '.join(leaks[:3])} in "
            f"{teacher_dir / 'requests'}): the DSPy rows are void; find how the test set "
            "reached the optimizer"
        )
    if rc == PAUSED_EXIT:
        print("GEPA paused (its calls are on record); rerun the command to resume", flush=True)
    elif rc:
        raise SystemExit(f"the DSPy worker failed (exit {rc}); see the output above and {log}")


if __name__ == "__main__":
    main()
