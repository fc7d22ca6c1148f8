"""End to end through the `pld` command with the real embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pld.phases.layouts import render_layout
from pld.rulebook import Rulebook
from pld.rundir import FILES
from pld.tasks.files import load_task
from tests.e2e.conftest import pld

pytestmark = pytest.mark.e2e


def test_models_check_prints_answer_latency_tokens() -> None:
    r = pld("models", "check", "local:smollm2")
    assert "answer:" in r.stdout
    assert "latency:" in r.stdout and " ms" in r.stdout
    assert "tokens:     prompt" in r.stdout


def test_distill_writes_every_artifact(run_dir: Path) -> None:
    for name in FILES:
        assert (run_dir / name).exists(), name
    run = json.loads((run_dir / "run.json").read_text())
    assert set(run["phases"]) == {"extract", "synthesize", "resolve", "finalize", "decide", "lint"}
    assert run["usage_by_role"]["teacher"]["calls"] > 0
    assert run["models"]["student"].startswith("local:SmolLM2-135M-Instruct")
    ins = json.loads((run_dir / "instructions.json").read_text())["instructions"]
    # provenance: training examples for synthesized rules, the loop's edit for added ones
    assert ins and all(i["sources"] or i["history"] for i in ins)
    md = (run_dir / "prompt.md").read_text()
    assert f"## {ins[0]['id']}." in md and "Formed from" in md
    system = (run_dir / "system_prompt.txt").read_text()
    template = (run_dir / "user_template.txt").read_text()
    used = json.loads((run_dir / "decision.json").read_text())["used"]
    # the layout is fitted on validation (issue #13): its exact bytes are what was saved
    rb = Rulebook.load(run_dir)
    want = render_layout(used["layout"], rb.task, rb.instructions)
    if used["prompt"] == "rulebook":
        assert ins[0]["text"] in system + template and (system, template) == (
            want.system,
            want.user_template,
        )
    if used["layout"] in ("default", "weigh_all"):
        assert template == "Ticket: {text}"
    rules = [json.loads(x) for x in (run_dir / "rules.jsonl").read_text().splitlines()]
    fails = [
        json.loads(x) for x in (run_dir / "extraction_failures.jsonl").read_text().splitlines()
    ]
    assert len(rules) + len(fails) == run["n_train"] == 8  # every example accounted for


def test_predict_reproduces_in_run_predictions(run_dir: Path, workdir: Path) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    by_id = {e.id: e for e in load_task("demo").examples}
    inputs = workdir / "val.jsonl"
    inputs.write_text(
        "".join(
            json.dumps({"id": i, "text": by_id[i].fields["text"], "label": by_id[i].label}) + "\n"
            for i in run["val_ids"]
        )
    )
    out = workdir / "pred.jsonl"
    # --no-cache: the model really runs on the saved prompt bytes
    r = pld(
        "predict",
        str(run_dir),
        str(inputs),
        "--student",
        "local:smollm2",
        "--out",
        str(out),
        "--no-cache",
    )
    assert f"wrote {len(run['val_ids'])} predictions" in r.stdout
    a = [json.loads(x) for x in (run_dir / "predictions_val.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(p["id"], p["label"]) for p in a] == [(p["id"], p["label"]) for p in b]
    assert all(abs(x["confidence"] - y["confidence"]) < 1e-4 for x, y in zip(a, b, strict=True))
    assert all(not p["cached"] for p in b)


def test_resume_of_a_finished_run_makes_no_model_call(run_dir: Path, workdir: Path) -> None:
    env = {"PLD_CACHE": str(workdir / "cache.sqlite")}
    pld("distill", "--resume", str(run_dir), env=env)
    run = json.loads((run_dir / "run.json").read_text())
    assert all(s["calls"] == 0 for s in run["usage_by_role"].values()), run["usage_by_role"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "distill",
                "--task",
                "demo",
                "--teacher",
                "gpt4",
                "--student",
                "local:smollm2",
                "--out",
                "{tmp}/x",
            ],
            "unknown model spec 'gpt4'",
        ),
        (
            [
                "distill",
                "--task",
                "nope",
                "--teacher",
                "local:smollm2",
                "--student",
                "local:smollm2",
                "--out",
                "{tmp}/x",
            ],
            "unknown task 'nope'",
        ),
        (
            [
                "distill",
                "--task",
                "demo",
                "--teacher",
                "local:smollm2",
                "--student",
                "local:smollm2",
                "--out",
                "{tmp}/x",
                "--resume",
                "{tmp}/x",
            ],
            "not both",
        ),
        (
            [
                "distill",
                "--task",
                "demo",
                "--teacher",
                "local:smollm2",
                "--student",
                "local:smollm2?temp=1",
                "--out",
                "{tmp}/x",
            ],
            "unknown option 'temp'",
        ),
        (
            [
                "distill",
                "--task",
                "demo",
                "--teacher",
                "local:smollm2",
                "--student",
                "local:smollm2",
                "--out",
                "{tmp}/full",
            ],
            "not empty; pass --resume",
        ),
        (["distill", "--resume", "{tmp}/empty"], "no run to resume"),
        (["models", "check", "local:/no/such.gguf"], "no GGUF file at /no/such.gguf"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    (tmp_path / "empty").mkdir()
    r = pld(*[a.replace("{tmp}", str(tmp_path)) for a in args], check=False)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.replace("\n", " ")
    assert "Traceback" not in r.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"


def test_unknown_flag_is_rejected() -> None:
    r = pld("distill", "--epsilon", "0.3", check=False)
    assert r.returncode == 2 and "No such option '--epsilon'" in r.stderr
