"""Output defects of issue #10: tables cut to 80 columns off a terminal; the report's resolve
plot with only round 0, and its missing-evaluation section."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest

from pld.cli._common import console
from pld.cli.evaluate import render_comparison
from pld.evaluate import Comparison, method_result
from pld.predictions import Prediction
from pld.prompts import Prompt
from pld.report import build as report_build

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "prechange_run"


def _comparison() -> Comparison:
    preds = [
        Prediction(str(i), "billing", "billing", 0.9, 0.1, 50, 1, 0, False, "billing")
        for i in range(4)
    ]
    c = Comparison("support-tickets", "local:smollm2", [p.id for p in preds])
    for m in ("zero-shot", "few-shot", "cot", "pld"):
        c.methods[m] = method_result(m, Prompt("s", "{text}"), preds, ["billing", "other"], 0.0)
        c.predictions[m] = preds
    return c


def test_tables_are_not_cut_when_output_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    c = console()
    assert not c.is_terminal
    c.file = io.StringIO()
    render_comparison(_comparison(), c)
    text = c.file.getvalue()
    assert "…" not in text
    for header in ("method", "macro-F1", "95% CI", "p95 ms", "out tok", "McNemar p"):
        assert header in text
    assert "zero-shot per class — billing: P 1.00" in text


def test_report_without_evaluation_says_how_to_add_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIX, run)
    page = report_build.build_report(run).read_text()
    assert "id='no-evaluation'" in page
    assert f"pld compare --prompt {run}" in page
    assert "pld compare --prompt" in (run / "report" / "report.md").read_text()


def test_resolve_plot_axis_with_only_round_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def keep(fig: Any) -> bytes:
        seen.append(fig.axes[0].get_xlim())
        return b""

    monkeypatch.setattr(report_build, "_png", keep)
    plots = report_build._plots({}, [{"round": 0, "val_macro_f1": 0.5, "accepted": True}], None)
    assert "f1_by_round" in plots
    lo, hi = seen[-1]
    assert lo <= 0 and hi - lo >= 1.5  # not the -0.04..0.04 of a single point
