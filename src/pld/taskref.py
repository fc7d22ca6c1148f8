"""A task as named on the command line, and the seeded split of it, so that ``pld distill``,
``pld eval`` and a resumed run all load and split the same data the same way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pld.errors import ConfigError
from pld.tasks.base import Split, Task, stratified_split
from pld.tasks.files import load_task

DEFAULT_SPLIT = "0.5,0.25,0.25"


def parse_split(s: str) -> tuple[float, float, float]:
    """``"0.5,0.25,0.25"`` → train, val, test fractions."""
    try:
        parts = tuple(float(x) for x in s.split(","))
    except ValueError as e:
        raise ConfigError(f"--split takes three fractions like 0.5,0.25,0.25, got {s!r}") from e
    if len(parts) != 3:
        raise ConfigError(f"--split takes three fractions like 0.5,0.25,0.25, got {s!r}")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class TaskRef:
    """``--task`` and the flags that say how to read it (kept in run.json under ``cli``)."""

    ref: str
    text_fields: tuple[str, ...] = ()
    label_field: str | None = None
    description: str | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> TaskRef:
        """From the ``cli`` record of run.json (or the same keys from flags)."""
        if not args.get("task"):
            raise ConfigError("--task is required (demo, or a task .toml file)")
        return cls(
            str(args["task"]),
            tuple(args.get("text_fields") or ()),
            args.get("label_field"),
            args.get("description"),
        )

    def load(self) -> Task:
        """Load the task as the flags describe it."""
        return load_task(
            self.ref,
            description=self.description,
            text_fields=self.text_fields or ("text",),
            label_field=self.label_field or "label",
        )

    def split(self, split: str, seed: int) -> tuple[Task, Split]:
        """The task and its seeded, stratified train/val/test split."""
        task = self.load()
        return task, stratified_split(task.examples, fractions=parse_split(split), seed=seed)
