"""pld — Prompt-Level Distillation: distil a teacher LLM's reasoning into an auditable rulebook
that a small student LLM follows zero-shot."""

from pld._version import __version__
from pld.config import DistillConfig
from pld.distiller import Distiller
from pld.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BudgetExceeded,
    ConfigError,
    DataError,
    NotFittedError,
    PLDError,
    RateLimited,
    TeacherOutputError,
)
from pld.predictions import Prediction
from pld.rulebook import Rulebook
from pld.rules import Instruction, InstructionSet
from pld.tasks import Example, Task, load_records, load_task, stratified_split

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "BudgetExceeded",
    "ConfigError",
    "DataError",
    "DistillConfig",
    "Distiller",
    "Example",
    "Instruction",
    "InstructionSet",
    "NotFittedError",
    "PLDError",
    "Prediction",
    "RateLimited",
    "Rulebook",
    "Task",
    "TeacherOutputError",
    "__version__",
    "load_records",
    "load_task",
    "stratified_split",
]
