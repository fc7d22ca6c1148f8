"""``pld serve``: a distilled classifier as an HTTP service; ``pld engine serve``: a bare GGUF
behind an OpenAI-compatible HTTP API (what ``pld serve`` did before the classify service)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from pld.cli._common import err
from pld.errors import ConfigError

if TYPE_CHECKING:
    from pld.service.runner import Running

DEFAULT_TOKEN_ENV = "PLD_SERVE_TOKEN"
LOOPBACK = "127.0.0.1"
_POSITIVE = click.IntRange(min=1)


def _announce(running: Running) -> None:
    """One machine-readable line once the service answers (scripts and tests wait for it)."""
    sys.stdout.write(f"LISTENING {running.url}\n")
    sys.stdout.flush()


def bearer_token(token_env: str | None) -> str | None:
    """The token from the environment, never from the command line (``ps`` shows that). A
    variable named with ``--token-env`` must be set: a typo must not leave the service open."""
    if token_env is None:
        return os.environ.get(DEFAULT_TOKEN_ENV) or None
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise ConfigError(
            f"--token-env {token_env}: the environment variable {token_env} is unset or empty; "
            "export the bearer token in it, or drop --token-env to serve without one"
        )
    return token


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--student", required=True, help="Student spec, e.g. local:smollm2?slots=4.")
@click.option("--host", default=LOOPBACK, show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--concurrency", type=_POSITIVE, help="Requests in flight [default: slots].")
@click.option("--max-queue", default=256, show_default=True, type=_POSITIVE)
@click.option("--max-batch", default=8, show_default=True, type=_POSITIVE)
@click.option("--workers", default=2, show_default=True, type=_POSITIVE)
@click.option("--max-body-bytes", default=256 * 1024, show_default=True, type=_POSITIVE)
@click.option("--max-input-chars", default=16_000, show_default=True, type=_POSITIVE)
@click.option("--max-items", default=64, show_default=True, type=_POSITIVE)
@click.option(
    "--token-env",
    default=None,
    help=f"Env var holding a bearer token to require [default: {DEFAULT_TOKEN_ENV} if set].",
)
@click.option(
    "--cite", is_flag=True, help="Answer with the rule that decided each label (cited_rule)."
)
def serve(
    run_dir: str,
    student: str,
    host: str,
    port: int,
    concurrency: int | None,
    max_queue: int,
    max_batch: int,
    workers: int,
    max_body_bytes: int,
    max_input_chars: int,
    max_items: int,
    token_env: str | None,
    cite: bool,
) -> None:
    """Serve the rulebook in RUN_DIR over HTTP: POST /v1/classify, GET /healthz,
    GET /v1/rulebook, GET /metrics. Answers exactly as `pld predict` does. Prints
    `LISTENING <url>` once ready; Ctrl-C or SIGTERM stops it gracefully.

    The bare llama.cpp server is `pld engine serve`."""
    from pld.service.runner import run_service

    token = bearer_token(token_env)
    if token is None and host not in (LOOPBACK, "localhost", "::1"):
        err.print(f"warning: serving on {host} without a bearer token (see --token-env)")
    run_service(
        run_dir,
        student,
        host=host,
        port=port,
        concurrency=concurrency,
        token=token,
        max_queue=max_queue,
        max_batch=max_batch,
        workers=workers,
        max_body_bytes=max_body_bytes,
        max_input_chars=max_input_chars,
        max_items=max_items,
        on_ready=_announce,
        log_level="warning",
        cite=cite,
    )


@click.group()
def engine() -> None:
    """Run an inference engine on its own."""


@engine.command("serve")
@click.argument("model", default="smollm2")
@click.option("--host", default=LOOPBACK, show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--ctx", default=8192, show_default=True)
@click.option("--slots", default=1, show_default=True)
@click.option("--threads", default=0, show_default=True, help="0: all cores.")
def engine_serve(model: str, host: str, port: int, ctx: int, slots: int, threads: int) -> None:
    """Serve MODEL (smollm2 or a .gguf path) over an OpenAI-compatible HTTP API (chat +
    embeddings) with llama.cpp; use it as openai:MODEL@URL?dialect=llamacpp. Prints
    `LISTENING <base_url>` once ready (--port 0: a free port)."""
    from pld.serve import serve_until_stopped, start_server

    server, url = start_server(model, host=host, port=port, n_ctx=ctx, slots=slots, threads=threads)
    serve_until_stopped(server, url)


COMMANDS = [serve, engine]
