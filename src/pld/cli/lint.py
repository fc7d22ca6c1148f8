"""``pld lint``: the rulebook lint of a finished run, printed (nothing in the run is written)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pld.cli._common import out
from pld.errors import LintFailed
from pld.lint import (
    Finding,
    TokenCounter,
    findings_of,
    lint_record,
    run_budget,
    strict_message,
    token_counter,
)
from pld.models.registry import resolve_chat
from pld.rulebook import Rulebook


def findings_table(findings: Sequence[Finding], title: str) -> Table:
    """One row per finding: code, rule, message."""
    t = Table(title=title, title_justify="left")
    t.add_column("code", style="bold yellow", no_wrap=True)
    t.add_column("rule", no_wrap=True)
    t.add_column("finding")
    for f in findings:
        t.add_row(f.code, f.rule_id or "-", f.message)
    return t


def render_lint(record: Mapping[str, Any], to: Console, *, title: str = "pld lint") -> None:
    """The findings of a lint record as a table, or one line saying there are none."""
    found = findings_of(record)
    size = (
        f"prompt {record.get('prompt_tokens')} tokens ({record.get('counted_with')}), "
        f"budget {record.get('budget_tokens')}"
    )
    if not found:
        to.print(Text.assemble((f"{title}: ", "bold"), f"no findings; {size}"))
        return
    to.print(findings_table(found, f"{title}: {len(found)} warning(s); {size}"))


@click.command("lint")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--budget-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Token budget of the prompt [default: the run's lint_budget_tokens, else 1500].",
)
@click.option("--strict", is_flag=True, help="Exit with status 2 when there is any finding.")
@click.option(
    "--student",
    default=None,
    help="Count tokens on this student's tokenizer (e.g. local:smollm2) [default: chars/4].",
)
@click.option("--json", "as_json", is_flag=True, help="Print lint.json's record instead.")
def lint_cmd(
    run_dir: str, budget_tokens: int | None, strict: bool, student: str | None, as_json: bool
) -> None:
    """Lint RUN_DIR's rulebook: verbatim training text (PLD-L001), protected-attribute logic
    (PLD-L002), prompt over the token budget (PLD-L003), labels no rule decides (PLD-L004),
    rules naming another label (PLD-L005). Findings are warnings; --strict makes them an error.
    """
    rb = Rulebook.load(run_dir)
    count: TokenCounter | None = token_counter(resolve_chat(student)) if student else None
    record = lint_record(
        rb, None, budget_tokens=budget_tokens or run_budget(rb), count_tokens=count
    )
    if as_json:
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        render_lint(record, out)
    found = findings_of(record)
    if strict and found:
        raise LintFailed(strict_message(found, run_dir), findings=tuple(found))


COMMANDS = [lint_cmd]
