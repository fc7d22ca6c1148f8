"""``pld serve``: a GGUF behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import click


@click.command()
@click.option("--model", default="smollm2", show_default=True, help="smollm2 or a .gguf path.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--ctx", default=8192, show_default=True)
@click.option("--slots", default=1, show_default=True)
def serve(model: str, host: str, port: int, ctx: int, slots: int) -> None:
    """Serve a GGUF over an OpenAI-compatible HTTP API (chat + embeddings)."""
    from pld.serve import serve_until_stopped, start_server

    server, url = start_server(model, host=host, port=port, n_ctx=ctx, slots=slots)
    serve_until_stopped(server, url)


COMMANDS = [serve]
