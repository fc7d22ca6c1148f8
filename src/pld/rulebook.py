"""``Rulebook``: the fitted artifact, apart from the fitting (setfit's model/trainer split).

A rulebook is what a distillation leaves behind and everything that uses one needs: the task
spec, the instructions with their provenance and history, the exact system prompt and user
template the student is sent, the decision settings (calibration and its saved prior, and the
fitted ``decision`` record when the run has one: the layout and calibration chosen on the
validation split, every candidate's score and the reason) and the identities of the models that
made it. A run directory without ``decision.json`` (written before the decide stage existed, or
with ``decide = false``) loads and predicts exactly as before; so does one without
``lint.json`` (the rulebook lint's findings, ``pld.lint``). ``Rulebook.load`` is the only
reader of a run directory's artifacts — ``pld predict``, ``pld eval --method pld``,
``pld report`` and ``Distiller.load`` all go through it — so a saved rulebook behaves the same
everywhere.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pld._async import run_sync
from pld._version import __version__
from pld.cache import Cache
from pld.errors import DataError, RunDirError
from pld.models.base import ChatModel
from pld.models.client import ChatClient, Limits
from pld.models.registry import resolve_chat
from pld.phases.classify import (
    CONTENT_FREE,
    MEASURE,
    CitePrior,
    cite_prior,
    classify_with,
    label_prior,
)
from pld.predictions import Item, Prediction, as_items
from pld.prompts import Prompt, system_prompt_for
from pld.rules import InstructionSet, render_markdown
from pld.rundir import RunDir, ledger_shape, rows_of_objects
from pld.tasks.base import Example, Task

log = logging.getLogger(__name__)

CALIBRATION_METHOD = "contextual calibration (Zhao et al. 2021)"
_LISTED = re.compile(r"^(\d+)\. \[([^\]\s]+)\]", re.M)
PRIOR_TOLERANCE = 1e-9


class Recompute(enum.Enum):
    """``apredict(prior=RECOMPUTE)``: measure the prior now (None already means "none")."""

    TOKEN = 0


RECOMPUTE = Recompute.TOKEN


def task_to_json(t: Task) -> dict[str, Any]:
    """The task spec as run.json stores it (no examples: those stay in the user's data)."""
    return {
        "name": t.name,
        "description": t.description,
        "labels": list(t.labels),
        "label_descriptions": dict(t.label_descriptions),
        "input_template": t.input_template,
    }


def task_from_json(d: Mapping[str, Any]) -> Task:
    """The task spec back from run.json."""
    try:
        return Task(
            name=str(d["name"]),
            description=str(d["description"]),
            labels=tuple(str(x) for x in d["labels"]),
            input_template=str(d["input_template"]),
            label_descriptions=dict(d.get("label_descriptions") or {}),
        )
    except (KeyError, TypeError) as e:
        raise DataError(f"incomplete task record (missing or wrong {e})") from e


def calibration_record(prior: Mapping[str, float] | None) -> dict[str, Any]:
    """calibration.json: the method, its content-free inputs and the prior they gave."""
    return {
        "method": CALIBRATION_METHOD,
        "content_free_inputs": list(CONTENT_FREE),
        "prior": dict(prior) if prior is not None else None,
    }


def prior_drift(saved: Mapping[str, float] | None, now: Mapping[str, float] | None) -> str | None:
    """How a recomputed calibration prior differs from the saved one (None when it does not)."""
    if saved is None and now is None:
        return None
    if saved is None or now is None or set(saved) != set(now):
        return f"saved prior {dict(saved or {})} vs recomputed {dict(now or {})}"
    worst = max(abs(saved[k] - now[k]) for k in saved)
    if worst <= PRIOR_TOLERANCE or math.isnan(worst):
        return None
    return f"saved prior {dict(saved)} vs recomputed {dict(now)} (max difference {worst:.3g})"


def _calibration_shape(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict) or not isinstance(d.get("prior") or {}, dict):
        raise TypeError("expected an object with a 'prior' object")
    return d


def _decision_shape(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict) or not isinstance(d.get("used") or d, dict):
        raise TypeError("expected a decision object")
    bool((d.get("used") or d)["calibrate"])
    return d


def _lint_shape(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict) or not isinstance(d.get("findings"), list):
        raise TypeError("expected an object with a 'findings' list")
    rows_of_objects(d["findings"])
    return d


def _rounds_shape(rows: list[Any]) -> list[dict[str, Any]]:
    for r in rows_of_objects(rows):
        int(r["round"])
    return rows


def _sources(rows: list[Any]) -> dict[str, dict[str, str]]:
    return {
        str(e["id"]): {"input": str(e["input"]), "label": str(e["label"])}
        for e in rows_of_objects(rows)
    }


@dataclass(frozen=True)
class Rulebook:
    """The fitted artifact. ``system_prompt`` and ``user_template`` are the exact bytes sent;
    ``calibration`` is calibration.json as saved at fit time (its prior is checked, on
    predict, against the one the student gives now); ``run_info`` is the run's ledger as
    written (config, split ids, usage, the CLI arguments); ``origin`` is the directory it was
    loaded from or fitted into; ``decision`` is decision.json (None when the run has none);
    ``lint`` is lint.json, the rulebook lint's record (None when it was not linted)."""

    task: Task
    instructions: InstructionSet
    system_prompt: str
    user_template: str
    calibrate: bool = True
    calibration: Mapping[str, Any] | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    rounds: tuple[Mapping[str, Any], ...] = ()
    sources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    run_info: Mapping[str, Any] = field(default_factory=dict)
    origin: Path | None = None
    decision: Mapping[str, Any] | None = None
    lint: Mapping[str, Any] | None = None

    @classmethod
    def build(
        cls, task: Task, instructions: InstructionSet, train: Sequence[Example] = (), **kw: Any
    ) -> Rulebook:
        """A rulebook for ``task`` with ``instructions``: the system prompt is rendered here,
        once, and from then on only ever read back."""
        sources = {e.id: {"input": task.render(e), "label": e.label} for e in train}
        return cls(
            task.with_examples(()),
            instructions,
            system_prompt_for(task, instructions),
            task.input_template,
            sources=sources,
            **kw,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        """The task's labels, in order (the student's closed choice)."""
        return self.task.labels

    @property
    def prior(self) -> Mapping[str, float] | None:
        """The saved calibration prior (None when none was saved or the backend gave none)."""
        return (self.calibration or {}).get("prior")

    @property
    def warning(self) -> str | None:
        """The harm guard's sentence when the rulebook was no better than the student's best
        zero-shot decision on validation (None otherwise, and for runs without a decision)."""
        guard = (self.decision or {}).get("guard") or {}
        sentence = guard.get("sentence")
        return str(sentence) if sentence else None

    @property
    def zero_shot_decision(self) -> Mapping[str, Any] | None:
        """The zero-shot layout and calibration fitted on the same validation items (what a
        fair zero-shot baseline for this rulebook uses), or None."""
        zs = (self.decision or {}).get("zero_shot")
        return zs if isinstance(zs, Mapping) else None

    @property
    def cite_ids(self) -> tuple[str, ...]:
        """The rule ids a citation may name, in the order the prompt lists them (the student
        cites by list number: ``k. [id] ...``); empty when the prompt lists no rules (e.g. a
        zero-shot fallback)."""
        ids = {i.id for i in self.instructions.instructions}
        listed = _LISTED.findall(self.system_prompt + "\n" + self.user_template)
        by_number = {int(k): rid for k, rid in listed if rid in ids}
        return tuple(by_number[k] for k in range(1, len(by_number) + 1) if k in by_number)

    @property
    def prompt(self) -> Prompt:
        """What the student is sent, as the evaluation compares it with the baselines."""
        return Prompt(self.system_prompt, self.user_template)

    # -- persistence -------------------------------------------------------------------------
    def write_artifacts(self, rd: RunDir) -> None:
        """Write the artifact files (not run.json, which the run's ledger owns)."""
        srcs = {k: v["input"] for k, v in self.sources.items()}
        if self.sources:
            rd.write_jsonl(
                "examples_train.jsonl",
                [
                    {"id": k, "input": v["input"], "label": v["label"]}
                    for k, v in self.sources.items()
                ],
            )
        rd.write_text("system_prompt.txt", self.system_prompt)
        rd.write_text("user_template.txt", self.user_template)
        rd.write_text(
            "prompt.md", render_markdown(self.instructions, task_name=self.task.name, sources=srcs)
        )
        if self.calibration is not None:
            rd.write_json("calibration.json", dict(self.calibration))
        if self.decision is not None:
            rd.write_json("decision.json", dict(self.decision))
        if self.lint is not None:
            rd.write_json("lint.json", dict(self.lint))

    def save(self, path: str | Path) -> Path:
        """Save to ``path`` so that ``Rulebook.load(path)`` gives the same rulebook back. A
        directory other than the rulebook's own is overwritten (pld's files only); a directory a
        running fit holds is refused."""
        same = self.origin is not None and Path(path).resolve() == self.origin.resolve()
        with RunDir(path, resume=same, force=not same, lock=True) as rd:
            rd.write_text("instructions.json", self.instructions.dumps())
            self.write_artifacts(rd)
            if not rd.exists("run.json"):
                task = task_to_json(self.task)
                rd.write_json("run.json", {"pld_version": __version__, "task": task})
            return rd.path

    @classmethod
    def load(cls, path: str | Path) -> Rulebook:
        """Read a finished run (or a saved rulebook). Reads only; a missing optional artifact
        (rounds, calibration, training sources) leaves its field empty; a damaged one, or one
        of the wrong shape, is a RunDirError naming the file and the fix."""
        rd = RunDir(path, read_only=True)
        run = rd.read_ledger()
        task = rd.load("run.json", lambda d: task_from_json(ledger_shape(d)["task"] or {}))
        if not rd.exists("instructions.json"):
            raise RunDirError(
                f"{rd.path} has no instructions.json: the run has not finished; continue it "
                f"with pld distill --resume {rd.path}"
            )

        def optional(name: str, build: Callable[[Any], Any], default: Any) -> Any:
            return rd.load(name, build) if rd.exists(name) else default

        decision = optional("decision.json", _decision_shape, None)
        calibrate = bool((run.get("config") or {}).get("calibrate", True))
        if decision is not None:
            calibrate = bool((decision.get("used") or decision)["calibrate"])
        return cls(
            task=task,
            instructions=rd.load("instructions.json", InstructionSet.from_json),
            system_prompt=rd.read_text("system_prompt.txt"),
            user_template=rd.read_text("user_template.txt"),
            calibrate=calibrate,
            calibration=optional("calibration.json", _calibration_shape, None),
            models=dict(run.get("models") or {}),
            rounds=tuple(optional("rounds.jsonl", _rounds_shape, [])),
            sources=optional("examples_train.jsonl", _sources, {}),
            run_info=run,
            origin=rd.path,
            decision=decision,
            lint=optional("lint.json", _lint_shape, None),
        )

    # -- prediction --------------------------------------------------------------------------
    def check_prior(self, prior: Mapping[str, float] | None, student_identity: str) -> str | None:
        """Compare a recomputed prior with the saved one; a difference is logged as a warning
        (the recomputed prior is the student's own, so it is the one used)."""
        if self.calibration is None:
            return None
        if self.models.get("student") not in (None, student_identity):
            log.info("student %s differs from the run's; its own prior is used", student_identity)
            return None
        drift = prior_drift(self.prior, prior)
        if drift is not None:
            log.warning("calibration.json does not match the student's prior now: %s", drift)
        return drift

    async def aprior(
        self, student: ChatClient, *, calibrate: bool | None = None
    ) -> Mapping[str, float] | None:
        """The calibration prior ``apredict`` divides by for ``student`` (None: uncalibrated,
        or a backend that gives no label distribution). A long-lived caller (the service)
        computes it once and passes it to every ``apredict``; its content-free calls also put
        the system prompt into the engine's prefix cache."""
        if not (self.calibrate if calibrate is None else calibrate):
            return None
        prior = await label_prior(
            system_prompt=self.system_prompt,
            user_template=self.user_template,
            labels=self.labels,
            student=student,
        )
        self.check_prior(prior, student.identity)
        return prior

    async def apredict(
        self,
        items: Sequence[Item],
        student: ChatClient,
        *,
        calibrate: bool | None = None,
        prior: Mapping[str, float] | Recompute | None = RECOMPUTE,
        on_done: Callable[[], None] | None = None,
        cite: bool = False,
        cite_prior: CitePrior | Recompute | None = RECOMPUTE,
    ) -> list[Prediction]:
        """Classify ``items`` with exactly the saved prompt bytes. ``calibrate`` overrides the
        rulebook's setting (the evaluation's ``--no-calibrate``); ``prior``, from ``aprior``,
        skips recomputing it (None: uncalibrated). ``cite`` adds each answer's cited rule
        (``Prediction.rule``): the labels, confidences and calibration are those of an uncited
        call, the citation one more constrained call (``pld.phases.classify``), calibrated
        with ``cite_prior`` (from ``acite_prior``; measured when not given)."""
        if isinstance(prior, Recompute):
            prior = await self.aprior(student, calibrate=calibrate)
        return await classify_with(
            self.prompt,
            items,
            self.labels,
            student,
            calibrate=False,
            prior=prior,
            on_done=on_done,
            cite=self.cite_ids if cite else None,
            cite_calibration=MEASURE if isinstance(cite_prior, Recompute) else cite_prior,
        )

    async def acite_prior(self, student: ChatClient) -> CitePrior | None:
        """The citation's content-free prior for this prompt (labels x 3 calls; None when
        the student gives no distribution): measure it once where many batches are cited."""
        return await cite_prior(self.prompt, self.labels, self.cite_ids, student)

    def student_client(
        self,
        student: ChatModel | str,
        *,
        cache: Cache | None = None,
        concurrency: int | None = None,
    ) -> ChatClient:
        """The student as ``predict`` calls it. ``concurrency`` is how many requests are in
        flight at once (an OpenAI-compatible server with N slots, or vLLM/SGLang, wants many);
        by default the run's ``student_concurrency``."""
        model = resolve_chat(student) if isinstance(student, str) else student
        if concurrency is None:
            concurrency = int((self.run_info.get("config") or {}).get("student_concurrency", 1))
        return ChatClient(
            model, role="student", cache=cache, limits=Limits(max_concurrency=concurrency)
        )

    def predict(
        self,
        inputs: Sequence[Example | Mapping[str, str] | str],
        student: ChatClient | ChatModel | str,
        *,
        cache: Cache | None = None,
        concurrency: int | None = None,
        cite: bool = False,
        cite_prior: CitePrior | Recompute | None = RECOMPUTE,
    ) -> list[Prediction]:
        """Classify ``inputs`` (examples, field mappings or bare texts) with ``student`` (a
        client, a model, or a model spec such as ``local:smollm2``); ``concurrency`` as in
        ``student_client`` (a given client keeps its own); ``cite``, ``cite_prior`` as in
        ``apredict``."""
        if not isinstance(student, ChatClient):
            student = self.student_client(student, cache=cache, concurrency=concurrency)
        return run_sync(self.apredict(as_items(inputs), student, cite=cite, cite_prior=cite_prior))
