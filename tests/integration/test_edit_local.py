"""pld edit --eval and the lint's token count with the real embedded student (SmolLM2 via
xllamacpp): the edited rulebook is scored on the run's own test split, and the prompt's size
is counted on the engine's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pld.cli import main
from pld.lint import BUDGET, lint, token_counter
from pld.models.local import LocalChatModel
from pld.rulebook import Rulebook, task_to_json
from pld.rules import Instruction, InstructionSet
from pld.taskref import DEFAULT_SPLIT, TaskRef

pytestmark = pytest.mark.integration

RULES = {
    "billing": "If the ticket mentions a charge, refund, invoice or payment, the label is billing.",
    "technical": "If the ticket reports an error, crash or something not working, it is technical.",
    "account": "If the ticket is about logging in, a password or account settings, it is account.",
    "shipping": "If the ticket asks where a parcel is or about delivery, the label is shipping.",
}


def _demo_run(tmp_path: Path) -> Path:
    """A finished run on the demo task as pld distill leaves it (its ledger names the task,
    split and student), with hand-written rules: no teacher is needed to test an edit."""
    task, split = TaskRef.from_args({"task": "demo"}).split(DEFAULT_SPLIT, 0)
    rules = InstructionSet(
        tuple(
            Instruction(f"R{k}", lab, text, (lab,))
            for k, (lab, text) in enumerate(RULES.items(), 1)
        )
    )
    run = Rulebook.build(task, rules, split.train, calibrate=False).save(tmp_path / "run")
    ledger = {
        "pld_version": "test",
        "task": task_to_json(task),
        "config": {"seed": 0, "calibrate": False},
        "cli": {"task": "demo", "split": DEFAULT_SPLIT, "student": "local:smollm2"},
        "train_ids": [e.id for e in split.train],
        "val_ids": [e.id for e in split.val],
        "test_ids": [e.id for e in split.test],
    }
    (run / "run.json").write_text(json.dumps(ledger))
    return run


def test_edit_then_eval_scores_the_new_version_on_the_runs_test_split(
    smollm2_chat: LocalChatModel, tmp_path: Path
) -> None:
    run = _demo_run(tmp_path)
    new_text = "If the ticket mentions a refund, a double charge or an invoice, it is billing."
    args = ["edit", str(run), "R1", "--text", new_text, "--eval", "--n", "8"]
    # the session's engine (the same context size), so no second model is loaded
    r = CliRunner().invoke(main, [*args, "--student", "local:smollm2?ctx=4096"])
    assert r.exit_code == 0, r.output
    new = tmp_path / "run-edit-1"
    assert "rewrote R1" in r.output and "8 test items" in r.output
    results = json.loads((new / "eval" / "results.json").read_text())
    assert list(results["methods"]) == ["pld"] and results["n"] == 8
    pld = results["methods"]["pld"]
    assert 0.0 <= pld["macro_f1"] <= 1.0 and pld["invalid"] == 0
    assert new_text in (new / "system_prompt.txt").read_text()

    # the lint counts the prompt on the student's own tokenizer
    rb = Rulebook.load(new)
    n_tokens = len(smollm2_chat.engine.tokenize(rb.system_prompt + "\n" + rb.user_template))
    found = lint(rb, None, budget_tokens=10, count_tokens=token_counter(smollm2_chat))
    ev = next(f.evidence for f in found if f.code == BUDGET)
    assert ev["counted_with"] == "student tokenizer" and ev["tokens"] == n_tokens
