"""The built-in demo as one library call: the support-ticket task, distilled offline with the
``small`` preset, scored before and after on its held-out test split by ``evaluate.compare`` —
the same code ``pld eval`` runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pld.cache import Cache
from pld.config import DistillConfig
from pld.distiller import Distiller
from pld.evaluate import Comparison, compare
from pld.progress import Progress
from pld.tasks.base import Split, Task, stratified_split
from pld.tasks.files import load_task

DEMO_SPLIT = (0.4, 0.3, 0.3)


@dataclass(frozen=True)
class DemoResult:
    """The fitted distiller and the three scorings of the test split: zero-shot raw,
    zero-shot calibrated, and PLD."""

    distiller: Distiller
    zero_shot_raw: Comparison
    zero_shot: Comparison
    pld: Comparison

    @property
    def baseline_calls(self) -> int:
        """Student calls the two zero-shot scorings made (the PLD scoring is not counted)."""
        return sum(self.zero_shot_raw.calls.values()) + sum(self.zero_shot.calls.values())


def demo_data() -> tuple[Task, Split]:
    """The demo task and its seeded split."""
    task = load_task("demo")
    return task, stratified_split(task.examples, fractions=DEMO_SPLIT, seed=0)


def run_demo(
    out_dir: str | Path,
    teacher: str,
    student: str,
    max_rounds: int,
    *,
    progress: Progress | None = None,
) -> DemoResult:
    """Distil the demo task into ``out_dir`` (overwritten; the cache sits beside it) and score
    zero-shot and PLD on the test split."""
    task, sp = demo_data()
    cache = Cache(Path(out_dir).parent / "cache.sqlite")
    test = list(sp.test)
    raw = compare(["zero-shot"], task, test, student, calibrate=False, cache=cache)
    before = compare(["zero-shot"], task, test, student, calibrate=True, cache=cache)
    d = Distiller(
        teacher=teacher,
        student=student,
        embedder="local:smollm2",
        config=DistillConfig.preset("small", max_rounds=max_rounds),
        cache=cache,
        progress=progress,
    )
    d.fit(task.with_examples(sp.train), task.with_examples(sp.val), run_dir=out_dir, force=True)
    after = compare(["pld"], task, test, student, rulebook=d.rulebook_, cache=cache)
    return DemoResult(d, raw, before, after)
