"""Promises kept under abuse (issue #11): user text printed literally, one process per run
directory, usage that survives interruption, checked destinations, damaged artifacts as one
clear line, advice that works, and a summary that agrees with the ledger."""

from __future__ import annotations

import io

import pytest

from pld.cli._common import RichProgress, console, summary_table

HOSTILE = ("[red]", "runs/a[/]b", "openai:m:latest@http://h/v1", "error [/x] :smile:")


def test_user_text_prints_literally_never_as_markup_or_emoji(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    c = console()
    c.file = io.StringIO()
    c.print(summary_table("pld distill [/x]", [(k, k) for k in HOSTILE]))
    c.print(f"wrote 3 predictions to {HOSTILE[1]}; {HOSTILE[3]}")
    with RichProgress(c) as prog:
        prog.start("label [/x]", 1)
        prog.advance("label [/x]")
        prog.end("label [/x]")
    text = c.file.getvalue()
    for s in (*HOSTILE, "pld distill [/x]", "label [/x]"):
        assert s in text
    assert "Ⓜ" not in text and "😄" not in text
