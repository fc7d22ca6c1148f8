"""What every command shares: the consoles, the one error boundary, progress bars and the
tables results are rendered as."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pld.cache import Cache, default_cache_path
from pld.errors import PLDError, TeacherBatchPending

# Output that is not a terminal (a log file, CI) is not cut to 80 columns: tables and lines
# are printed whole, however wide.
UNBOUNDED_WIDTH = 1000


def console(*, stderr: bool = False) -> Console:
    """A console that wraps at the terminal's width, and never when not writing to one.

    Everything pld prints holds user text (labels, specs, paths, error messages), so markup
    and emoji codes are off here, once, for every command: a label ``[red]``, a spec
    ``openai:m:x`` or a path ``runs/a[/]b`` prints as typed and can never crash the output.
    Styles are given as ``Text`` styles, never as markup inside strings."""
    c = Console(stderr=stderr, markup=False, emoji=False)
    if c.is_terminal:
        return c
    return Console(stderr=stderr, markup=False, emoji=False, width=UNBOUNDED_WIDTH)


out = console()
err = console(stderr=True)


class Boundary(click.Group):
    """The CLI's single error boundary: a ``PLDError`` becomes one line on stderr and exit
    status 2; Ctrl-C says how to continue and exits 130. A teacher batch waiting for its
    results is not an error: the next commands go to stdout and the exit status is 75."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; translate what escapes it (the one place that does)."""
        try:
            return super().invoke(ctx)
        except TeacherBatchPending as e:
            out.print(Text.assemble(("teacher batch pending:", "bold yellow"), " ", str(e)))
            ctx.exit(TeacherBatchPending.exit_code)
        except PLDError as e:
            err.print(Text.assemble(("error:", "bold red"), " ", str(e)), highlight=False)
            ctx.exit(2)
        except KeyboardInterrupt:
            err.print("interrupted: finished calls are cached; rerun with --resume to continue")
            ctx.exit(130)


class RichProgress:
    """The library's progress hook as rich bars: one per phase or method."""

    def __init__(self, c: Console) -> None:
        self._p = Progress(
            TextColumn("{task.description:<11}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=c,
            transient=False,
        )
        self._ids: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._p.start()
        return self

    def __exit__(self, *a: object) -> None:
        self._p.stop()

    def start(self, phase: str, total: int | None) -> None:
        """Add a bar (``total`` None: no known end)."""
        self._ids[phase] = self._p.add_task(phase, total=total)

    def advance(self, phase: str, n: int = 1) -> None:
        """Move the bar on; an unknown phase is ignored."""
        if phase in self._ids:
            self._p.advance(self._ids[phase], n)

    def end(self, phase: str) -> None:
        """Mark the bar complete at what was done."""
        if phase in self._ids:
            t = self._p.tasks[self._ids[phase]]
            self._p.update(self._ids[phase], total=t.completed)


def open_cache(path: str | None, no_cache: bool) -> Cache | None:
    """The cache the flags ask for (``--no-cache``: none)."""
    if no_cache:
        return None
    return Cache(path or default_cache_path())


def summary_table(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    """A two-column key/value table (the summaries of distill and demo)."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    return t


def usage_rows(usage: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """One row per role: calls, cache hits, failures, retries, tokens and cost."""
    return [
        (
            role,
            f"{s['calls']} calls ({s['cache_hits']} cache hits, {s['failures']} failed, "
            f"{s['retries']} retried), {s['prompt_tokens']} prompt + "
            f"{s['completion_tokens']} completion tokens, ${s['cost_usd']:.4f}",
        )
        for role, s in usage.items()
    ]
