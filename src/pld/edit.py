"""A person's edit of a fitted rulebook, saved as a new rulebook version beside the original.

The rulebook is the classifier's logic in plain text, so the people who sign it off will want
to change a rule: reword it, narrow it, drop it. An edit must stay as auditable as the fit:

  * the original run directory is only read, never written: the edit is a new directory
    (by default the sibling ``RUN_DIR-edit-N``), written whole or not at all (built in a
    temporary sibling and renamed into place);
  * the new text passes the same checks as every teacher-written rule (``drop_copies``: no
    copy of the rule's training inputs, a stated condition, no instruction to the model), so
    an edit cannot smuggle an injection into the student's system prompt;
  * the edit is on record three times: in the rule's history (author ``user``), in the
    instruction set's notes (a removed rule has no history left), and in run.json's
    ``edits`` list (old and new text, time, the directory it came from);
  * the new directory holds everything ``Rulebook.save`` writes plus the run's ledger (task,
    split ids, CLI arguments), so ``pld eval --prompt``, ``pld report`` and ``pld lint`` work
    on it as on the original, and its own lint.json.

The decision fitted on validation (layout, calibration) is kept: the edited rules are rendered
in the layout the rulebook was fitted with. The saved calibration prior is dropped (it was
measured for the old prompt; a prediction recomputes it) and so is the harm guard's verdict
(it compared the old rules with zero-shot); refit with ``pld distill`` to refit those.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pld.errors import ConfigError, RuleRefused, RunDirError
from pld.lint import lint_record, run_budget
from pld.phases.layouts import DEFAULT_LAYOUT, render_layout
from pld.phases.resolve import drop_copies
from pld.rulebook import Rulebook
from pld.rules import Edit, InstructionSet
from pld.rundir import RunDir

AUTHOR = "user"


@dataclass(frozen=True)
class EditResult:
    """What ``edit_run`` made: the new rulebook, where it was saved, the edit's record (as
    run.json's ``edits`` keeps it) and the new rulebook's lint record (lint.json)."""

    rulebook: Rulebook
    path: Path
    record: Mapping[str, Any]
    lint: Mapping[str, Any]


def next_edit_dir(run_dir: str | Path) -> Path:
    """The first free sibling ``RUN_DIR-edit-N`` (N = 1, 2, ...)."""
    base = Path(run_dir).resolve()
    n = 1
    while (base.parent / f"{base.name}-edit-{n}").exists():
        n += 1
    return base.parent / f"{base.name}-edit-{n}"


def _check_text(rb: Rulebook, rule_id: str, edit: Edit) -> None:
    """Refuse new rule text that a teacher's edit would not get through (resolve's checks)."""
    ins = rb.instructions.get(rule_id)
    shown = [rb.sources[s]["input"] for s in (ins.sources if ins else ()) if s in rb.sources]
    _, dropped = drop_copies([edit], shown, rb.labels)
    if dropped:
        raise RuleRefused(
            f"the new text of {rule_id} was refused: {dropped[0]['why']}; write when the rule "
            "applies (if/when the input mentions ...) in your own words"
        )


def _edit_of(
    rb: Rulebook, rule_id: str, text: str | None, remove: bool, labels: Sequence[str]
) -> Edit:
    if (text is None) == (not remove):
        raise ConfigError("give either --text TEXT (a new rule text) or --remove, not both")
    if rb.instructions.get(rule_id) is None:
        ids = ", ".join(i.id for i in rb.instructions.instructions) or "none"
        raise ConfigError(f"the rulebook has no rule {rule_id}; its rules are {ids}")
    unknown = [lab for lab in labels if lab not in rb.labels]
    if unknown:
        raise ConfigError(f"unknown label(s) {unknown}; the task's labels are {list(rb.labels)}")
    if remove:
        return Edit("remove", id=rule_id, author=AUTHOR)
    clean = " ".join((text or "").split())  # one line: a rule is one line of the prompt
    if not clean:
        raise ConfigError("--text is empty; give the rule's new text or use --remove")
    edit = Edit("edit", id=rule_id, text=clean, labels=tuple(labels), author=AUTHOR)
    _check_text(rb, rule_id, edit)
    return edit


def _decision_after_edit(rb: Rulebook, rule_id: str) -> tuple[str, Mapping[str, Any] | None]:
    """The layout the edited rules are rendered in, and the decision record carried over
    (the rulebook's own fitted layout and calibration; no harm-guard verdict)."""
    d = rb.decision
    if not d:
        return DEFAULT_LAYOUT, None
    layout, cal = str(d["layout"]), bool(d["calibrate"])
    kept = {
        **d,
        "used": {"prompt": "rulebook", "layout": layout, "calibrate": cal},
        "guard": None,
        "reason": f"fitted on validation for the rulebook before pld edit changed {rule_id}: "
        + str(d.get("reason", "")),
    }
    return layout, kept


def edited(
    rb: Rulebook,
    rule_id: str,
    *,
    text: str | None = None,
    remove: bool = False,
    labels: Sequence[str] = (),
) -> tuple[Rulebook, dict[str, Any]]:
    """``rb`` with rule ``rule_id``'s text replaced by ``text`` (and, with ``labels``, what it
    decides) or the rule removed, and the edit's record. Raises ``RuleRefused`` for text the
    rule checks refuse and ``ConfigError`` for an unknown rule or label."""
    edit = _edit_of(rb, rule_id, text, remove, labels)
    now = datetime.now(UTC)
    tag = f"pld edit {now.date().isoformat()}"
    new, outcomes = rb.instructions.apply([edit], tag=tag, labels=rb.labels)
    if not outcomes[0]["applied"]:  # checked above; kept as a guard against a silent no-op
        raise ConfigError(f"the edit of {rule_id} was not applied: {outcomes[0].get('why')}")
    old = rb.instructions.get(rule_id)
    assert old is not None
    what = "removed" if remove else "rewrote"
    note = f"{tag}: {AUTHOR} {what} {rule_id} (was: {old.text})"
    new = InstructionSet(new.instructions, new.version, (*new.notes, note))
    layout, decision = _decision_after_edit(rb, rule_id)
    prompt = render_layout(layout, rb.task, new)
    record = {
        "op": edit.op,
        "rule_id": rule_id,
        "author": AUTHOR,
        "at": now.isoformat(timespec="seconds"),
        "from": str(rb.origin.resolve()) if rb.origin is not None else None,
        "from_version": rb.instructions.version,
        "version": new.version,
        "old_text": old.text,
        "new_text": None if remove else edit.text,
        "old_labels": list(old.labels),
        "new_labels": None if remove else list((new.get(rule_id) or old).labels),
        "layout": layout,
    }
    run_info = {**rb.run_info, "edits": [*rb.run_info.get("edits", []), record]}
    out = replace(
        rb,
        instructions=new,
        system_prompt=prompt.system,
        user_template=prompt.user_template,
        calibration=None,
        decision=decision,
        run_info=run_info,
        lint=None,
        origin=None,
    )
    return out, record


def save_new_version(rb: Rulebook, out: str | Path) -> Path:
    """Write ``rb`` (with its ledger) to the new directory ``out``, whole or not at all: it is
    built in a temporary sibling and renamed into place. An existing ``out`` is refused."""
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RunDirError(f"{dest} exists; pld edit never overwrites: choose another --out")
    if not dest.parent.is_dir():
        raise RunDirError(f"directory {dest.parent} does not exist; create it or choose --out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        rd = RunDir(tmp)
        rd.write_json("run.json", dict(rb.run_info))
        rd.write_text("instructions.json", rb.instructions.dumps())
        rb.write_artifacts(rd)
        if rb.rounds:
            rd.write_jsonl("rounds.jsonl", [dict(r) for r in rb.rounds])
        os.rename(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunDirError(f"cannot write {dest}: {e.strerror or e}; choose another --out") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def edit_run(
    run_dir: str | Path,
    rule_id: str,
    *,
    text: str | None = None,
    remove: bool = False,
    labels: Sequence[str] = (),
    out: str | Path | None = None,
    budget_tokens: int | None = None,
) -> EditResult:
    """Load the finished run ``run_dir``, edit rule ``rule_id`` (see ``edited``), lint the
    result and save it as a new directory (``out``, by default ``next_edit_dir``)."""
    rb = Rulebook.load(run_dir)
    new, record = edited(rb, rule_id, text=text, remove=remove, labels=labels)
    rec = lint_record(new, None, budget_tokens=budget_tokens or run_budget(rb))
    new = replace(new, lint=rec)
    path = save_new_version(new, out if out is not None else next_edit_dir(run_dir))
    return EditResult(replace(new, origin=path), path, record, rec)
