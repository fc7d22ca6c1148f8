"""The built-in demo as one library call: the support-ticket task, distilled offline with the
``small`` preset, scored before and after on its held-out test split by ``evaluate.compare`` —
the same code ``pld eval`` runs.

Its teacher, by default, is a frontier LLM whose replies were recorded once and ship with the
package (``pld/data/demo_teacher.jsonl``, an OpenAI Batch results file). The demo runs the
teacher in batch mode and answers every exported request file from that recording through
the ordinary ``pld teacher import`` path, so there is one way in for teacher replies, and the
embedding, the student and the report run locally. ``bench/record_demo_teacher.py`` rebuilds
the recording; ``tests/integration/test_demo_recording.py`` fails when the demo asks a
question the recording does not answer (a prompt change then needs a new recording).

Resolve requests quote the student's failures, and a student on another machine (other CPU,
other float rounding) may fail on other items than the recording's. Then the demo calls no
live teacher and does not fail: it keeps the best rulebook of the rounds the recording
covers, and says so in one line (``DemoResult.note``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pld.batch import BatchDir
from pld.batchrun import import_into_run
from pld.cache import Cache
from pld.config import DistillConfig
from pld.distiller import Distiller, EmbedArg, ModelArg
from pld.errors import ConfigError, TeacherBatchPending
from pld.evaluate import Comparison, compare
from pld.progress import Progress
from pld.rundir import atomic_write
from pld.tasks.base import Split, Task, stratified_split
from pld.tasks.files import load_task

DEMO_SPLIT = (0.4, 0.3, 0.3)
DEMO_TEACHER = "openai:frontier"  # the identity the recorded replies were asked under
RECORDING = "demo_teacher.jsonl"
BATCH_FOLDER = "teacher-batch"
MAX_BATCHES = 20  # a fit needs a handful; more means the recording loops (a bug)

# (requests file, results file to write) -> custom_ids the answerer has no reply for
Answerer = Callable[[Path, Path], list[str]]


@dataclass(frozen=True)
class DemoResult:
    """The fitted distiller and the three scorings of the test split: zero-shot raw,
    zero-shot calibrated, and PLD; which teacher wrote the rules, and a note when the
    recording ran out before the resolve rounds did."""

    distiller: Distiller
    zero_shot_raw: Comparison
    zero_shot: Comparison
    pld: Comparison
    teacher: str = ""
    note: str = ""
    recorded_usage: dict[str, Any] | None = None  # BatchDir.usage() of the recorded replies

    @property
    def baseline_calls(self) -> int:
        """Student calls the two zero-shot scorings made (the PLD scoring is not counted)."""
        return sum(self.zero_shot_raw.calls.values()) + sum(self.zero_shot.calls.values())


@dataclass(frozen=True)
class Unanswered:
    """A batch the answerer could not fully answer: the fit stopped there."""

    phase: str
    requests_file: Path
    custom_ids: list[str]
    rounds_done: int


class RecordingNotCovering(ConfigError):
    """The demo asked the recorded teacher a question it has no reply for."""


def demo_data() -> tuple[Task, Split]:
    """The demo task and its seeded split."""
    task = load_task("demo")
    return task, stratified_split(task.examples, fractions=DEMO_SPLIT, seed=0)


def demo_meta() -> dict[str, Any]:
    """What run.json records of the demo's data, as ``pld distill --task demo`` would: so
    ``pld audit``, ``pld eval`` and ``pld edit --eval`` on the demo's run find its items."""
    _, sp = demo_data()
    split = ",".join(str(x) for x in DEMO_SPLIT)
    return {"cli": {"task": "demo", "split": split}, "test_ids": [e.id for e in sp.test]}


def recording_path() -> Path:
    """The shipped recording of the demo teacher's replies."""
    with resources.as_file(resources.files("pld") / "data" / RECORDING) as p:
        return Path(p)


def recorded_answerer(recording: Path) -> Answerer:
    """Answer a request file with the recorded result lines of the same custom_id."""
    lines: dict[str, str] = {}
    for raw in recording.read_text(encoding="utf-8").splitlines():
        if raw.strip():
            lines[json.loads(raw)["custom_id"]] = raw

    def answer(requests_file: Path, results: Path) -> list[str]:
        ids = [json.loads(x)["custom_id"] for x in requests_file.read_text().splitlines() if x]
        atomic_write(results, "".join(lines[i] + "\n" for i in ids if i in lines))
        return [i for i in ids if i not in lines]

    return answer


def demo_distiller(
    teacher: str,
    student: ModelArg,
    max_rounds: int,
    cache: Cache,
    progress: Progress | None = None,
    *,
    batch: bool = False,
    embedder: EmbedArg = "local:smollm2",
) -> Distiller:
    """The demo's Distiller (``batch``: the teacher in batch mode, inside the run folder)."""
    return Distiller(
        teacher=teacher,
        student=student,
        embedder=embedder,
        config=DistillConfig.preset("small", max_rounds=max_rounds),
        cache=cache,
        progress=progress,
        teacher_batch=BATCH_FOLDER if batch else None,
    )


def fit_batched(
    make: Callable[[], Distiller], out_dir: str | Path, answer: Answerer
) -> Distiller | Unanswered:
    """Fit the demo with its teacher in batch mode, answering each exported request file with
    ``answer`` and importing the results (``pld teacher import``), until the fit is done or a
    request has no answer."""
    task, sp = demo_data()
    run = Path(out_dir)
    # a new run gets a new run_id; the batch folder of an earlier demo run is not its own
    shutil.rmtree(run / BATCH_FOLDER, ignore_errors=True)
    for n in range(MAX_BATCHES):
        d = make()
        d.teacher_batch = run / BATCH_FOLDER
        try:
            d.fit(
                task.with_examples(sp.train),
                task.with_examples(sp.val),
                run_dir=run,
                force=n == 0,
                resume=n > 0,
                meta=demo_meta(),
            )
            return d
        except TeacherBatchPending as p:
            req = Path(p.requests_file)
            results = req.with_name(req.name.replace("requests-", "results-", 1))
            missing = answer(req, results)
            if missing:
                return Unanswered(p.phase, req, missing, _rounds_done(run))
            import_into_run(run, [results])
    raise RuntimeError(f"the demo fit still waited for the teacher after {MAX_BATCHES} batches")


def _rounds_done(run: Path) -> int:
    p = run / "rounds.jsonl"
    return max(0, len(p.read_text().splitlines()) - 1) if p.exists() else 0


def fit_recorded(
    out_dir: str | Path,
    student: ModelArg,
    max_rounds: int,
    cache: Cache,
    progress: Progress | None = None,
    *,
    answer: Answerer | None = None,
) -> tuple[Distiller, str]:
    """The demo fit with the recorded teacher: (distiller, note). Extraction and synthesis
    must be covered by the recording; a resolve round it does not cover ends the resolve
    phase there (the note says so) instead of asking a live teacher. ``answer`` replaces
    the shipped recording (tests)."""
    path = recording_path()
    answer = answer or recorded_answerer(path)

    def make(rounds: int = max_rounds) -> Distiller:
        return demo_distiller(DEMO_TEACHER, student, rounds, cache, progress, batch=True)

    got = fit_batched(make, out_dir, answer)
    if isinstance(got, Distiller):
        return got, ""
    if got.phase != "resolve":
        raise RecordingNotCovering(
            f"the recorded demo teacher ({path}) has no reply for {len(got.custom_ids)} "
            f"{got.phase} requests of {got.requests_file} (first: {got.custom_ids[0]}); the "
            "teacher prompts changed: record the demo teacher again "
            "(python -m bench.record_demo_teacher)"
        )
    kept = got.rounds_done
    again = fit_batched(lambda: make(kept), out_dir, answer)
    if not isinstance(again, Distiller):
        raise RuntimeError(f"the demo refit with {kept} resolve rounds still waits: {again}")
    note = (
        f"the recording covers {kept} of the resolve rounds this student's failures asked "
        f"for (they quote the student, which differs across machines); kept the best "
        f"rulebook after round {kept} instead of calling a live teacher"
    )
    return again, note


def run_demo(
    out_dir: str | Path,
    teacher: str | None,
    student: str,
    max_rounds: int,
    *,
    progress: Progress | None = None,
) -> DemoResult:
    """Distil the demo task into ``out_dir`` (overwritten; the cache sits beside it) and score
    zero-shot and PLD on the test split. ``teacher=None``: the recorded frontier teacher."""
    task, sp = demo_data()
    cache = Cache(Path(out_dir).parent / "cache.sqlite")
    test = list(sp.test)
    raw = compare(["zero-shot"], task, test, student, calibrate=False, cache=cache)
    before = compare(["zero-shot"], task, test, student, calibrate=True, cache=cache)
    note, usage = "", None
    if teacher is None:
        d, note = fit_recorded(out_dir, student, max_rounds, cache, progress)
        who = f"{DEMO_TEACHER} (recorded replies, {_shown(recording_path())})"
        usage = BatchDir(Path(out_dir) / BATCH_FOLDER).usage()
    else:
        d = demo_distiller(teacher, student, max_rounds, cache, progress)
        d.fit(
            task.with_examples(sp.train),
            task.with_examples(sp.val),
            run_dir=out_dir,
            force=True,
            meta=demo_meta(),
        )
        who = teacher
    after = compare(["pld"], task, test, student, rulebook=d.rulebook_, cache=cache)
    return DemoResult(d, raw, before, after, teacher=who, note=note, recorded_usage=usage)


def _shown(p: Path) -> str:
    """``p`` relative to the working directory when it is below it (a checkout)."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
