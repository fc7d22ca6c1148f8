"""The ``pld`` command: one module per command group, over one error boundary. Commands parse
flags, make one library call and render what it returns; no evaluation or run-directory logic
lives here."""

from __future__ import annotations

import logging
import sys

import click

from pld._version import __version__
from pld.cli._common import Boundary


@click.group(cls=Boundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pld")
@click.option("-v", "--verbose", is_flag=True, help="Log what each phase decides.")
def main(verbose: bool) -> None:
    """Prompt-Level Distillation: turn a strong teacher LLM's reasoning into an auditable
    rulebook that a small student LLM follows zero-shot.

    \b
    Model specs:  local:smollm2 · local:/path/model.gguf?ctx=8192&slots=2
                  openai:gpt-4.1-mini · openai:NAME@http://127.0.0.1:8000/v1?dialect=llamacpp
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _register() -> None:
    from pld.cli import (
        audit,
        demo,
        distill,
        edit,
        evaluate,
        lint,
        models,
        predict,
        report,
        serve,
        teacher,
    )

    modules = (models, distill, teacher, predict, evaluate, audit, lint, edit, report, serve, demo)
    for mod in modules:
        for cmd in mod.COMMANDS:
            main.add_command(cmd)


_register()

__all__ = ["main"]
