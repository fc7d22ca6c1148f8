"""``pld report``: the HTML + Markdown report of a run."""

from __future__ import annotations

import click

from pld.cli._common import out
from pld.report import build_report


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write [default: RUN_DIR/report].",
)
def report(run_dir: str, out_dir: str | None) -> None:
    """Write a self-contained HTML page and a Markdown summary for RUN_DIR (plus PNG plots).
    Run `pld compare --prompt RUN_DIR ...` first to include the method comparison."""
    out.print(f"report written to {build_report(run_dir, out_dir)}")


COMMANDS = [report]
