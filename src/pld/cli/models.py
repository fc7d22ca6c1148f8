"""``pld models``: inspect and test model backends."""

from __future__ import annotations

import click

from pld._async import run_sync
from pld.cli._common import out
from pld.models.base import GenOptions, Message
from pld.models.client import ChatClient, Limits
from pld.models.registry import resolve_chat


@click.group()
def models() -> None:
    """Inspect and test model backends."""


@models.command("check")
@click.argument("spec")
@click.option("--prompt", default="Name three primary colours.", show_default=True)
@click.option("--max-tokens", default=24, show_default=True)
def models_check(spec: str, prompt: str, max_tokens: int) -> None:
    """Send one tiny request to SPEC; print the answer, latency and token counts."""
    client = ChatClient(resolve_chat(spec), role="check", limits=Limits(max_retries=1))
    comp = run_sync(client.complete([Message("user", prompt)], GenOptions(max_tokens=max_tokens)))
    out.print(f"model:      {client.identity}")
    out.print(f"answer:     {comp.text.strip()!r}")
    out.print(f"finish:     {comp.finish_reason}")
    out.print(f"latency:    {comp.latency_s * 1000:.0f} ms")
    out.print(
        f"tokens:     prompt {comp.usage.prompt_tokens} (cached "
        f"{comp.usage.cached_prompt_tokens}), completion {comp.usage.completion_tokens}"
    )


COMMANDS = [models]
