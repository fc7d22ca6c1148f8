"""DSPy side of the peer benchmark. Runs inside the separate DSPy environment (``.venv-dspy``),
never in pld's: it imports only the standard library and ``dspy``, reads the split that
``bench.peer`` wrote, talks to the servers ``bench.peer`` started (the llama.cpp student and,
in frontier mode, the frontier teacher's endpoint), and writes per-item predictions plus call
and token counts for pld to score with its own metrics.

    .venv-dspy/bin/python bench/dspy_worker.py SPEC.json OUT.json

Arms: ``dspy.Predict`` zero-shot; MIPROv2 ``auto="light"`` writing instructions with the
teacher as ``prompt_model``; the same at pld's teacher budget (``miprov2_budget`` in the spec:
candidates and trials); and, when the spec has a ``gepa`` section, GEPA with the teacher
as ``reflection_lm``, stopped by a budget in teacher calls (``TeacherCallBudget``). Both
optimizers write instructions only (no demonstrations: the zero-shot form PLD produces) and
see the training and validation items only; the test items go to the student alone.

Resumable: DSPy's own disk cache lives next to the results, each optimized program is saved
as soon as its optimizer returns, and GEPA checkpoints its search in ``gepa/``, so a rerun
repeats no model call. A compiling process that dies (an error, or killed) stays on record
(``dspy-<name>-attempts``) with the calls it paid for, which count toward the cost.

Only the standard library at module level, so pld's tests can import the pure helpers below.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Usage = dict[str, dict[str, int]]

# The worker's exit code when a search was paused (not failed): bench.peer reports it as such.
PAUSED_EXIT = 3
# The optimizers' names in the results file (each also has ``<name>-attempts``), in run order.
OPTIMIZERS = ("dspy-miprov2", "dspy-gepa", "dspy-miprov2-budget")


class Paused(Exception):
    """A search stopped on request between two iterations, to be resumed by a rerun. Raised
    (not a normal stop) so DSPy does not return the search's best-so-far as its result."""


def feedback(gold: str, predicted: object) -> tuple[float, str]:
    """Score and reflection text for one training item. GEPA's teacher reads the text for
    every item of a minibatch, so a miss names both labels (the same information pld's
    teacher gets from a labelled training example and the student's wrong answer)."""
    if predicted is not None and str(predicted) == gold:
        return 1.0, f"Correct: the label is {gold!r}."
    shown = "no valid label" if predicted is None else repr(str(predicted))
    return 0.0, f"Wrong: the assistant answered {shown}, but the correct label is {gold!r}."


class TeacherCallBudget:
    """A GEPA stop condition in teacher calls: stop once the teacher has answered ``budget``
    requests for this optimizer, counting the ``before`` calls of earlier processes that
    worked on the same (resumed) search and ``calls_now()``, this process's calls (cache
    replays excluded). GEPA checks its stop conditions before every iteration, and an
    iteration asks the teacher once at most for a one-predictor program, so the search stops
    at the budget. ``on_check`` runs at every check (the worker records its usage there, so a
    process killed mid-search leaves its calls on record).

    A search of pld's budget takes hours of this student, longer than one sitting, so it can be
    paused: when ``pause_file`` exists at a check, ``Paused`` is raised. That is an iteration
    boundary, where the usage on record is exact (a kill mid-iteration leaves that iteration's
    teacher call off the record). GEPA saves its state as an iteration starts, so a rerun
    redoes the last iteration, its calls replayed from DSPy's cache where they repeat."""

    def __init__(
        self,
        budget: int,
        before: int,
        calls_now: Callable[[], int],
        on_check: Callable[[], None] = lambda: None,
        pause_file: Path | None = None,
    ) -> None:
        self.budget, self.before, self.calls_now, self.on_check = (
            budget,
            before,
            calls_now,
            on_check,
        )
        self.pause_file = pause_file
        self.reached = False

    def used(self) -> int:
        return self.before + self.calls_now()

    def __call__(self, _state: object = None) -> bool:
        self.on_check()
        self.reached = self.used() >= self.budget
        if not self.reached and self.pause_file is not None and self.pause_file.exists():
            raise Paused(
                f"paused by {self.pause_file} at {self.used()} of {self.budget} teacher calls"
            )
        return self.reached


Compile = Callable[[Callable[[], None], list[dict[str, Any]]], tuple[Any, dict[str, Any]]]


class CheckpointEvery:
    """A DSPy LM callback that records the compiling process's usage at most every ``seconds``,
    after a model call. GEPA's stop check gives the worker a per-iteration hook; MIPROv2 has
    none, so a MIPROv2 process killed mid-search (a sitting ending) used to leave ``usage: {}``
    and its calls surfaced only as the finishing rerun's cache replays. Attached to the LM
    instances, so it sees every call from any thread DSPy evaluates in."""

    def __init__(
        self,
        checkpoint: Callable[[], None],
        seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checkpoint, self.seconds, self.clock = checkpoint, seconds, clock
        self.last = clock()
        self.lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """DSPy calls both ends of every callback it holds; only the end matters here."""

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        with self.lock:
            now = self.clock()
            if now - self.last < self.seconds:
                return
            self.last = now
            self.checkpoint()


class FailedCalls:
    """A DSPy LM callback that puts every model call that raised (a timeout or a server error,
    after the client's own retries) into DSPy's call history, which otherwise holds only the
    calls that returned. DSPy's optimizers catch such errors and go on (MIPROv2's bootstrap
    counts the example as a failed trace, its evaluations score it 0), so without this a
    failed call changes a search and shows in no count. Seen on Contract-NLI: one student call
    of a bootstrap timed out after 600 s on a shared machine, and the demo set built around it
    differed from the resumed search's. In the history, a failure falls in the same span
    (``Worker.usage``) as the calls around it; ``usage_of`` counts it as ``failed_calls``."""

    def __init__(self, history: list[dict[str, Any]]) -> None:
        self.history = history
        self.model_of: dict[str, str] = {}
        self.lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self.lock:
            self.model_of[call_id] = str(getattr(instance, "model", "unknown"))

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        with self.lock:
            model = self.model_of.pop(call_id, "unknown")
            if exception is not None:
                error = f"{type(exception).__name__}: {str(exception)[:300]}"
                self.history.append({"model": model, "failed": error, "usage": {}, "outputs": []})


class CacheRecording:
    """DSPy's disk cache mirrored to a committed JSON-lines file, so a search resumes on any
    machine. The cache itself (sqlite shards) is git-ignored and each sitting may start on a
    fresh checkout: without this, a MIPROv2 search longer than a sitting (Contract-NLI's is
    hours) redoes every student call each time and never finishes. ``restore`` fills the disk
    cache from the file at start; ``record`` appends the entries the file does not hold yet
    (called with every save of the results file, so a killed process loses at most its last
    ~30 s). Entries are DSPy's own cached values (JSON: the replies and their usage, never
    the request, so the file quotes no dataset item), keyed by DSPy's request hash; a restored
    call is a cache replay and is counted as one, not as a new call."""

    def __init__(self, disk: Any, path: Path) -> None:
        self.disk, self.path = disk, path
        self.recorded: set[str] = set()
        self.lock = threading.Lock()

    def restore(self) -> int:
        """Entries added to the disk cache; a torn last line (a process killed mid-write) is
        skipped, its call redone."""
        added = 0
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        for line in lines:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            key = str(r["key"])
            self.recorded.add(key)
            if key not in self.disk:
                self.disk[key] = r["value"]
                added += 1
        return added

    def record(self) -> int:
        """Append the disk cache's entries not in the file yet; returns how many."""
        with self.lock:
            keys, lines = [], []
            for key in list(self.disk):
                if key in self.recorded:
                    continue
                value = self.disk.get(key)
                try:
                    lines.append(json.dumps({"key": key, "value": value}, sort_keys=True))
                except TypeError:  # not JSON (no DSPy 3.4.1 entry is): redone on resume
                    continue
                keys.append(key)
            if not lines:
                return 0
            with self.path.open("a+b") as f:
                torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
                f.write(("\n" if torn else "").encode() + "\n".join(lines).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            self.recorded.update(keys)  # only once on disk: a failed write is retried
            return len(lines)


def usage_of(entries: list[dict[str, Any]], roles: dict[str, str]) -> Usage:
    """Calls and tokens per role ("student", "teacher") in DSPy history entries. DSPy 3.4.1
    does not always flag a disk-cache replay as a hit; a replay carries no usage, while every
    call a server answers reports its prompt tokens, so that is what tells them apart."""
    acc: Usage = {}
    for e in entries:
        role = roles.get(str(e["model"]), str(e["model"]).split("/")[-1])
        a = acc.setdefault(
            role, {"calls": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0}
        )
        if "failed" in e:  # put there by ``FailedCalls``; only present when there were some
            a["failed_calls"] = a.get("failed_calls", 0) + 1
            continue
        u = e.get("usage") or {}
        if getattr(e.get("response"), "cache_hit", False) or not u.get("prompt_tokens"):
            a["cache_hits"] += 1
            continue
        a["calls"] += 1
        a["prompt_tokens"] += int(u.get("prompt_tokens") or 0)
        a["completion_tokens"] += int(u.get("completion_tokens") or 0)
    return acc


class Worker:
    """The worker's results file (OUT.json) and the accounting around every program it runs.

    ``history`` is DSPy's global call history (every LM call of this process, in order), read
    by offset: the calls between two offsets are what a step cost. The file is rewritten
    atomically after every step, so a killed process loses at most the step it was in."""

    def __init__(
        self,
        out_path: Path,
        history: list[dict[str, Any]],
        roles: dict[str, str],
        on_save: Callable[[], object] = lambda: None,
        cache_entries_at_start: int | None = None,
    ) -> None:
        self.out_path, self.history, self.roles = out_path, history, roles
        self.on_save, self.cache_entries_at_start = on_save, cache_entries_at_start
        self.out: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
        self.failed: list[str] = []
        self.paused: list[str] = []

    def usage(self, start: int) -> Usage:
        return usage_of(self.history[start:], self.roles)

    def scored(self, name: str, items: list[Any]) -> bool:
        """Whether ``name``'s test answers are on record for exactly these items: a rerun with
        a larger test set (``bench.quality --n-test``) scores the saved program again, the
        items answered before replaying from DSPy's cache."""
        r = self.out.get(name)
        return r is not None and {p["id"] for p in r["preds"]} == {ex.id for ex in items}

    def save(self) -> None:
        tmp = self.out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.out, indent=2) + "\n")
        tmp.replace(self.out_path)
        self.on_save()

    def run(self, program: Any, items: list[Any]) -> dict[str, Any]:
        """Each item's label (None when DSPy cannot parse the reply: scored wrong by pld),
        its latency and, on a failure, the student's own words from every adapter's attempt
        (ChatAdapter, then DSPy's JSON fallback), so bench.peer can show what a lenient reader
        would accept."""
        start, t0 = len(self.history), time.perf_counter()
        preds = []
        for ex in items:
            t, n0 = time.perf_counter(), len(self.history)
            replies: list[str] = []
            try:
                label: str | None = str(program(**ex.inputs()).label)
                err = ""
            except Exception as e:  # a reply DSPy cannot parse: invalid, scored wrong
                label, err = None, f"{type(e).__name__}: {str(e)[:200]}"
                replies = [
                    str((h.get("outputs") or [""])[0])[:400]
                    for h in self.history[n0:]
                    if "failed" not in h
                ]
            preds.append(
                {
                    "id": ex.id,
                    "label": label,
                    "error": err,
                    "latency_s": time.perf_counter() - t,
                    "replies": replies,
                }
            )
        return {"preds": preds, "wall_s": time.perf_counter() - t0, "usage": self.usage(start)}

    def optimize(
        self, name: str, compile_fn: Compile, load: Callable[[Path], Any], test: list[Any]
    ) -> None:
        """Compile (or ``load`` the saved program), then score it on the test items.

        Every compiling process is on record in ``<name>-attempts`` from its start, its usage
        refreshed by ``checkpoint`` (GEPA calls it every iteration): a process that dies, even
        killed, leaves its calls there, and they count toward the optimizer's cost (a rerun
        takes them from the cache). The process that finishes moves its record into the
        program's ``compile`` info. An optimizer that raises is recorded and the next one
        still runs (the worker exits 1 at the end)."""
        if self.scored(name, test):
            return
        saved = self.out_path.with_name(f"{name}-program.json")
        if saved.exists():
            optimized = load(saved)
            compile_info = json.loads(saved.with_suffix(".usage.json").read_text())
        else:
            compiled = self._compile(name, compile_fn)
            if compiled is None:
                return
            optimized, compile_info = compiled
            optimized.save(str(saved))
            saved.with_suffix(".usage.json").write_text(json.dumps(compile_info, indent=2))
            # off the attempts on disk before the test pass: a process killed during that
            # pass must not leave this finished compile there too (its calls counted twice)
            self.save()
        r = self.run(optimized, test)
        r["compile"] = compile_info
        r["instructions"] = optimized.signature.instructions
        self.out[name] = r
        self.save()
        print(f"{name} done", flush=True)

    def _compile(self, name: str, compile_fn: Compile) -> tuple[Any, dict[str, Any]] | None:
        """One compiling process, on record from its start; None when it paused or failed."""
        attempts: list[dict[str, Any]] = self.out.setdefault(f"{name}-attempts", [])
        earlier = list(attempts)
        start, t0 = len(self.history), time.perf_counter()
        rec: dict[str, Any] = {
            "error": "the process ended during the compile (killed?)",
            "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if self.cache_entries_at_start is not None:
            # the process's, before any arm ran (a finished arm's test pass refills the cache):
            # 0 means nothing an earlier process did can be replayed, so this one starts the
            # search afresh and the earlier attempts are outside it (``bench.tables``)
            rec["cache_entries_at_start"] = self.cache_entries_at_start
        attempts.append(rec)

        def checkpoint() -> None:
            rec.update(wall_s=time.perf_counter() - t0, usage=self.usage(start))
            self.save()

        checkpoint()
        try:
            optimized, extra = compile_fn(checkpoint, earlier)
        except (KeyboardInterrupt, SystemExit):  # stopped (SIGTERM): its calls up to now
            checkpoint()
            raise
        except Paused as e:
            rec["error"] = str(e)  # "paused by …": bench.tables reads the prefix
            checkpoint()
            print(f"{name} {e}; rerun to resume", file=sys.stderr, flush=True)
            self.paused.append(name)
            return None
        except Exception as e:  # reported, not hidden: the optimizer's own failure
            rec["error"] = f"{type(e).__name__}: {str(e)[:500]}"
            checkpoint()
            traceback.print_exc()
            print(f"{name} FAILED (recorded; rerun to resume)", file=sys.stderr, flush=True)
            self.failed.append(name)
            return None
        attempts.remove(rec)
        info = {
            **(
                {"cache_entries_at_start": rec["cache_entries_at_start"]}
                if "cache_entries_at_start" in rec
                else {}
            ),
            "wall_s": time.perf_counter() - t0,
            "usage": self.usage(start),
            "earlier_attempts": attempts,
            **extra,
        }
        return optimized, info


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())

    # DSPy fetches a model price list from the internet on first use; the machines running
    # the benchmark have no internet and the bundled copy is enough (prices are unused here).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")
    import dspy
    from dspy.clients import base_lm

    # DSPy keeps the last 10,000 calls only; GEPA alone can make more, and the counts below
    # are read from this history, so it must keep every call of the run.
    base_lm.MAX_HISTORY_SIZE = 10**9

    dspy.configure_cache(
        enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=spec["cache_dir"]
    )
    recording = CacheRecording(dspy.cache.disk_cache, Path(spec["cache_recording"]))
    print(f"DSPy cache: {recording.restore()} entries restored from {recording.path}", flush=True)
    # bench.peer stops the worker with SIGTERM: exit through the ``finally`` below (and the
    # compile's last checkpoint) instead of dying with the last seconds' calls unrecorded
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run_arms(dspy, spec, recording, len(dspy.cache.disk_cache))
    finally:
        print(f"DSPy cache: {recording.record()} new entries recorded", flush=True)


def run_arms(dspy: Any, spec: dict[str, Any], recording: CacheRecording, entries: int) -> None:
    """Every arm the spec asks for, in order; finished ones stay in the results file."""
    from dspy.clients import base_lm

    student = dspy.LM(
        "openai/student",
        temperature=0.0,
        max_tokens=64,
        api_base=spec["base_url"],
        api_key="local",
        num_retries=3,
    )
    teacher = teacher_lm(dspy, spec)
    dspy.configure(lm=student, adapter=dspy.ChatAdapter())
    failures = FailedCalls(base_lm.GLOBAL_HISTORY)
    for lm in (student, teacher):  # ``lm.copy`` (DSPy's rollouts) shares the callbacks
        lm.callbacks.append(failures)
    w = Worker(
        Path(sys.argv[2]),
        base_lm.GLOBAL_HISTORY,
        {student.model: "student", teacher.model: "teacher"},
        recording.record,
        entries,
    )

    label_type = Literal[tuple(spec["labels"])]  # type: ignore[valid-type]
    fields: dict[str, Any] = {f: (str, dspy.InputField()) for f in spec["input_fields"]}
    fields["label"] = (label_type, dspy.OutputField())
    signature = dspy.make_signature(fields, spec["description"])

    def examples(rows: list[dict[str, Any]]) -> list[Any]:
        return [
            dspy.Example(**r["fields"], label=r["label"], id=r["id"]).with_inputs(
                *spec["input_fields"]
            )
            for r in rows
        ]

    def load(saved: Path) -> Any:
        program = dspy.Predict(signature)
        program.load(str(saved))
        return program

    train, val, test = (examples(spec[k]) for k in ("train", "val", "test"))
    # Which systems this process runs (bench.peer --arms, written into every spec it makes);
    # finished ones stay in the results file.
    arms = spec["arms"]
    zero = dspy.Predict(signature)
    if "predict" in arms and not w.scored("dspy-predict", test):
        w.out["dspy-predict"] = w.run(zero, test)
        w.save()
        print("dspy-predict done", flush=True)
    if "miprov2" in arms:
        compile_mipro = miprov2_compiler(dspy, zero, teacher, student, train, val, spec["seed"])
        w.optimize("dspy-miprov2", compile_mipro, load, test)
    g = spec.get("gepa")
    if g is not None and "gepa" in arms:
        compile_gepa = gepa_compiler(dspy, g, zero, teacher, train, val, w.usage, spec)
        w.optimize("dspy-gepa", compile_gepa, load, test)
    b = spec.get("miprov2_budget")
    # a paused search means "stop this sitting": the next arm waits for the rerun
    if b is not None and "miprov2-budget" in arms and not w.paused:
        compile_b = miprov2_compiler(dspy, zero, teacher, student, train, val, spec["seed"], b)
        w.optimize("dspy-miprov2-budget", compile_b, load, test)
    if w.failed:
        raise SystemExit(f"{', '.join(w.failed)} failed; see above (a rerun resumes)")
    if w.paused:
        raise SystemExit(PAUSED_EXIT)


def miprov2_compiler(
    dspy: Any,
    zero: Any,
    teacher: Any,
    student: Any,
    train: list[Any],
    val: list[Any],
    seed: int,
    budget: dict[str, Any] | None = None,
) -> Compile:
    """MIPROv2, the teacher proposing instructions for the student: ``auto="light"``, or, with
    ``budget`` (bench.peer's ``mipro_at_budget``), as many candidates and trials as it says.
    MIPROv2 has no checkpoint; a rerun replays every finished call from DSPy's cache, and
    ``CheckpointEvery`` keeps a killed process's calls on record meanwhile."""
    sizes: dict[str, Any] = {"auto": "light"}
    trials: dict[str, Any] = {}
    if budget:
        from dspy.teleprompt.mipro_optimizer_v2 import MIN_MINIBATCH_SIZE

        sizes = {"auto": None, "num_candidates": budget["num_candidates"]}
        # minibatches exactly when an ``auto`` run would use them
        trials = {"num_trials": budget["num_trials"], "minibatch": len(val) > MIN_MINIBATCH_SIZE}

    def compile_miprov2(checkpoint: Any, _earlier: Any) -> tuple[Any, dict[str, Any]]:
        opt = dspy.MIPROv2(
            metric=lambda ex, pred, trace=None: str(pred.label) == ex.label,
            prompt_model=teacher,
            task_model=student,
            **sizes,
            # Instructions only, no demonstrations: the same zero-shot form PLD produces.
            max_bootstrapped_demos=0,
            max_labeled_demos=0,
            num_threads=1,
            seed=seed,
            # DSPy stops an optimizer after 10 replies it cannot parse (dspy.settings.max_errors);
            # a student that breaks the field frame (the coder model writes "= unrelated" on
            # the stereotype scheme) would end MIPROv2 in its bootstrap. Unparsed replies still
            # score 0; the search just goes on, as GEPA's does.
            max_errors=len(train) + len(val),
        )
        live = CheckpointEvery(checkpoint)
        for lm in (teacher, student):
            lm.callbacks.append(live)
        try:
            program = opt.compile(zero.deepcopy(), trainset=train, valset=val, **trials)
        finally:
            for lm in (teacher, student):
                lm.callbacks.remove(live)
        return program, dict(budget or {})

    return compile_miprov2


def gepa_compiler(
    dspy: Any,
    g: dict[str, Any],
    zero: Any,
    teacher: Any,
    train: list[Any],
    val: list[Any],
    usage: Callable[[int], Usage],
    spec: dict[str, Any],
) -> Compile:
    """GEPA over the zero-shot program's instruction, the teacher reflecting on training
    minibatches (validation items track its Pareto front); stopped by ``TeacherCallBudget``.
    ``log_dir`` keeps GEPA's checkpoint, so a rerun resumes the search where it stopped;
    ``touch <log_dir>/PAUSE`` pauses it at the next iteration (see ``TeacherCallBudget``)."""
    from dspy.clients.base_lm import GLOBAL_HISTORY as history

    def gepa_metric(
        gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Any:
        score, text = feedback(gold.label, getattr(pred, "label", None))
        return dspy.Prediction(score=score, feedback=text)

    def compile_gepa(
        checkpoint: Callable[[], None], earlier: list[dict[str, Any]]
    ) -> tuple[Any, dict[str, Any]]:
        start = len(history)
        budget = TeacherCallBudget(
            int(g["teacher_calls"]),
            sum(int(a.get("usage", {}).get("teacher", {}).get("calls", 0)) for a in earlier),
            lambda: usage(start).get("teacher", {}).get("calls", 0),
            checkpoint,
            Path(g["log_dir"]) / "PAUSE",
        )
        opt = dspy.GEPA(
            metric=gepa_metric,
            reflection_lm=teacher,
            # The budget is the teacher-call stop condition; this cap on student rollouts only
            # bounds a search whose minibatches keep scoring perfectly (no teacher call then).
            max_metric_calls=int(g["max_metric_calls"]),
            num_threads=1,
            seed=spec["seed"],
            log_dir=g["log_dir"],
            track_stats=True,
            gepa_kwargs={"stop_callbacks": [budget]},
        )
        optimized = opt.compile(zero.deepcopy(), trainset=train, valset=val)
        budget()
        d = optimized.detailed_results
        return optimized, {
            "teacher_call_budget": budget.budget,
            "teacher_calls_all_processes": budget.used(),
            "stopped_by": "teacher-call budget" if budget.reached else "max_metric_calls",
            "max_metric_calls": int(g["max_metric_calls"]),
            "metric_calls": d.total_metric_calls,
            "full_val_evals": d.num_full_val_evals,
            "candidates": len(d.candidates),
            "val_scores": d.val_aggregate_scores,
            "best_idx": d.best_idx,
        }

    return compile_gepa


def teacher_lm(dspy: Any, spec: dict[str, Any]) -> Any:
    """The teacher as DSPy sees it. A frontier teacher holds each call open until its answer
    file exists, so its read timeout is hours and it is never retried: a retry re-sends a
    request while the first is still waiting (DSPy's default is a 600 s read timeout and 3
    retries, which would ask the same question again every 10 minutes)."""
    t = spec["teacher"]
    kw: dict[str, Any] = {"api_base": t["base_url"], "api_key": "local"}
    kw["num_retries"] = int(t.get("num_retries", 3))
    if t.get("timeout_s"):
        kw["timeout"] = float(t["timeout_s"])
    return dspy.LM(t["model"], temperature=0.0, max_tokens=int(t["max_tokens"]), **kw)


if __name__ == "__main__":
    main()
