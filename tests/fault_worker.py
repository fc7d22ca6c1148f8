"""A distillation with scripted models and a per-call delay, run as its own process so tests
can kill -9 it at any point (python -m tests.fault_worker RUN_DIR CACHE [--resume] [--slow];
--slow makes each call take a second, so a test can act while the run is alive)."""

from __future__ import annotations

import signal
import sys

from pld.distiller import Distiller
from pld.models.fake import HashEmbedder
from pld.tasks.base import stratified_split
from tests.fakes import SCRIPTED_CFG, make_student, make_task, make_teacher

CFG = SCRIPTED_CFG


def main() -> None:
    # A shell starts background jobs with SIGINT ignored and children inherit that, so a suite
    # launched with `make test &` would see this worker shrug off the tests' SIGINT and run
    # to its end. The tests mean an interactive Ctrl-C: restore Python's handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_dir, cache = sys.argv[1], sys.argv[2]
    resume = "--resume" in sys.argv
    delay = 1.0 if "--slow" in sys.argv else 0.03
    task = make_task(10)
    sp = stratified_split(task.examples, fractions=(0.5, 0.5, 0.0), seed=0)
    teacher, student = make_teacher(), make_student()
    teacher.delay_s = student.delay_s = delay
    Distiller(teacher, student, HashEmbedder(), config=CFG, cache=cache).fit(
        task.with_examples(sp.train), task.with_examples(sp.val), run_dir=run_dir, resume=resume
    )


if __name__ == "__main__":
    main()
