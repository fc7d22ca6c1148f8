"""Tasks and their loaders."""

from pld.tasks.base import Example, Split, Task, render_template, stratified_split
from pld.tasks.files import load_records, load_task, load_task_file

__all__ = [
    "Example",
    "Split",
    "Task",
    "load_records",
    "load_task",
    "load_task_file",
    "render_template",
    "stratified_split",
]
