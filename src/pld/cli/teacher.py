"""``pld teacher``: the two steps between a batch-mode ``pld distill`` and its ``--resume`` —
answer an exported request file with any model (``run``), and file a results file's replies
into the run (``import``)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pld.batch import run_batch_file
from pld.batchrun import import_into_run
from pld.cli._common import err, open_cache, out
from pld.models.client import Limits
from pld.models.registry import SPEC_HELP, resolve_chat


@click.group()
def teacher() -> None:
    """Answer and import teacher batch files (pld distill --teacher-batch DIR).

    \b
    The cycle:
      pld distill --task T --teacher SPEC --student S --out RUN --teacher-batch B
        -> exit 75: B/requests-extract-1.jsonl waits
      pld teacher run B/requests-extract-1.jsonl --model SPEC --out R.jsonl
        (or submit the file to a provider's Batch API, /v1/chat/completions)
      pld teacher import RUN R.jsonl
      pld distill --resume RUN        (repeat until it exits 0)
    """


@teacher.command("run")
@click.argument("requests_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--model", "spec", required=True, help=f"Model that answers ({SPEC_HELP}).")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Results file (OpenAI Batch output format); rerun to resume it.",
)
@click.option("--concurrency", type=int, default=1, show_default=True)
@click.pass_context
def run_cmd(
    ctx: click.Context, requests_file: str, spec: str, out_path: str, concurrency: int
) -> None:
    """Answer a batch request file with a model, as a provider's batch service would.

    Resumable: answered lines are kept and a rerun answers only the rest (and retries the
    requests that failed). Exits 1 when some requests failed (error lines in --out)."""
    model = resolve_chat(spec)
    bar = Progress(
        TextColumn("teacher run", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    with bar:
        task = bar.add_task("answer", total=None)
        rep = run_batch_file(
            requests_file,
            model,
            out_path,
            lambda done, total: bar.update(task, completed=done, total=total),
            limits=Limits(max_concurrency=concurrency),
        )
    out.print(
        f"answered {rep.answered} of {rep.total} requests ({rep.skipped} already in "
        f"{out_path}); {len(rep.failed)} failed"
    )
    if rep.failed:
        for msg in list(rep.failed.values())[:10]:
            err.print(f"  {msg}", highlight=False)
        err.print(
            f"{len(rep.failed)} requests failed (error lines in {out_path}): rerun this command "
            "to retry them, or import with --partial and let them go out in the next batch"
        )
        ctx.exit(1)


@teacher.command("import")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--partial",
    is_flag=True,
    help="Import the good lines even when others are bad (those requests go out again).",
)
@click.option("--cache", "cache_path", default=None, help="Cache database [default: the run's].")
def import_cmd(
    run_dir: str, results: tuple[str, ...], partial: bool, cache_path: str | None
) -> None:
    """Import OpenAI Batch results (output and/or error files) into the run in RUN_DIR.

    Every line is checked first (JSON, custom_id of this run, a 200 reply with a chat
    completion); any problem imports nothing and exits 2, listing each bad line, unless
    --partial. Then: pld distill --resume RUN_DIR."""
    rep = import_into_run(
        run_dir,
        [Path(p) for p in results],
        partial=partial,
        cache=open_cache(cache_path, False) if cache_path else None,
    )
    out.print(rep.summary())
    for p in rep.problems[:20]:
        err.print(f"  skipped: {p}", highlight=False)
    out.print(f"next: pld distill --resume {run_dir}")


COMMANDS = [teacher]
