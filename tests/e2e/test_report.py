"""`pld compare` + `pld audit` + `pld report` on a distilled run; the page is opened in headless
Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import pld

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def compared(run_dir: Path, workdir: Path) -> Path:
    env = {"PLD_CACHE": str(workdir / "cache.sqlite")}
    r = pld("compare", "--prompt", str(run_dir), "--student", "local:smollm2", "--n", "8", env=env)
    assert "McNemar" in r.stdout
    return run_dir / "eval" / "results.json"


def test_compare_saves_results_and_predictions(compared: Path) -> None:
    res = json.loads(compared.read_text())
    assert set(res["methods"]) == {"zero-shot", "few-shot", "cot", "pld"}
    assert res["n"] == 8
    for m, r in res["methods"].items():
        preds = [
            json.loads(x)
            for x in (compared.parent / f"predictions_{m}.jsonl").read_text().splitlines()
        ]
        assert [p["id"] for p in preds] == res["item_ids"]
        # figures recompute from the saved per-item predictions
        acc = sum(p["label"] == p["gold"] for p in preds) / len(preds)
        assert abs(acc - r["accuracy"]) < 1e-9
        assert r["macro_f1_ci95"][0] <= r["macro_f1"] <= r["macro_f1_ci95"][1]
        if m != "pld":
            assert 0.0 <= r["mcnemar_vs_pld"]["p_value"] <= 1.0
    assert res["methods"]["few-shot"]["shots"] == 5
    assert res["methods"]["cot"]["completion_tokens_per_item"] > 5


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_report_renders_in_headless_chromium(compared: Path, run_dir: Path, workdir: Path) -> None:
    env = {"PLD_CACHE": str(workdir / "cache.sqlite")}
    a = pld("audit", str(run_dir), "--student", "local:smollm2", env=env)
    assert f"audit written to {run_dir / 'audit.json'}" in a.stdout, a.stdout
    audit = json.loads((run_dir / "audit.json").read_text())
    r = pld("report", str(run_dir))
    html_path = run_dir / "report" / "index.html"
    assert "report written" in r.stdout and html_path.exists()
    assert (run_dir / "report" / "report.md").exists()
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found (apt-get install chromium); .ci/run installs it")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={run_dir / 'report' / '.chromium'}",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    shot = run_dir / "report" / "screenshot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,3000", html_path.as_uri()],
        capture_output=True,
        timeout=120,
    )
    m = re.search(r'data-plots-loaded="(\d+)" data-plots="(\d+)"', dom)
    assert m, dom[:500]
    assert int(m.group(1)) == int(m.group(2)) >= 8  # every plot decoded and rendered
    res = json.loads(compared.read_text())
    for method, r in res["methods"].items():
        cell = re.search(rf"data-metric=\"{re.escape(method)}\.macro_f1\">([0-9.]+)<", dom)
        assert cell and cell.group(1) == f"{r['macro_f1']:.3f}"
        cell = re.search(rf"data-metric=\"{re.escape(method)}\.accuracy\">([0-9.]+)<", dom)
        assert cell and cell.group(1) == f"{r['accuracy']:.3f}"
    ins = json.loads((run_dir / "instructions.json").read_text())["instructions"]
    for i in ins:
        assert f'id="rule-{i["id"]}"' in dom
    assert "Formed from" in dom
    # the rule audit: one row per rule with its Δ macro-F1, and the inline SVG plot
    assert [x["id"] for x in audit["rules"]] == [i["id"] for i in ins]
    for row in audit["rules"]:
        cell = re.search(rf"data-metric=\"audit\.{row['id']}\.delta\">([+-][0-9.]+)<", dom)
        assert cell and cell.group(1) == f"{row['delta_macro_f1']:+.3f}", row["id"]
        assert row["cited"] <= audit["n_val"]
    assert 'id="audit-plot"' in dom and dom.count("<rect") >= len(audit["rules"])
    assert shot.exists() and shot.stat().st_size > 10_000
