"""The six stages of a fit, each one ``Run.stage`` call: produce the stage's output from the
previous one, or load it from the run directory when a finished run already has it.

Kept apart from ``Distiller`` so that ``fit`` reads as the four calls and each stage's
artifacts (what it writes, what it reads back, what it records in the ledger) sit together.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pld.config import DistillConfig
from pld.decide import DecideSettings, choose_synthesis, decide
from pld.errors import TeacherOutputError
from pld.lint import lint_record, token_counter
from pld.models.client import ChatClient, EmbedClient
from pld.phases.classify import label_prior
from pld.phases.extract import ExtractionFailure, RawRule, extract
from pld.phases.resolve import ResolveSettings, resolve
from pld.phases.synthesize import SynthesisResult, synthesize_candidates
from pld.predictions import Prediction, example_items
from pld.progress import NoProgress, Progress
from pld.rulebook import Rulebook, calibration_record
from pld.rules import InstructionSet
from pld.run import Run
from pld.rundir import RunDir
from pld.tasks.base import Example, Task, stratified_sample

log = logging.getLogger(__name__)
T = TypeVar("T")

Extracted = tuple[list[RawRule], list[ExtractionFailure]]
# v0, clusters, noise, and the choice among synthesis candidates (None: one synthesis)
Synthesized = tuple[InstructionSet, dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]
Resolved = tuple[InstructionSet, list[dict[str, Any]], list[Prediction]]
# the kept rulebook and its validation predictions (None: decide is off, resolve's stand)
Decided = tuple[Rulebook, list[Prediction] | None]


@dataclass
class Fitting:
    """One fit's inputs and clients; each method is one stage."""

    task: Task
    train: list[Example]
    val: list[Example]
    cfg: DistillConfig
    teacher: ChatClient
    student: ChatClient
    embedder: EmbedClient
    run: Run
    progress: Progress | None = None

    async def _shown(
        self, phase: str, total: int | None, work: Callable[[Callable[[], None]], Awaitable[T]]
    ) -> T:
        """Run ``work(tick)`` under a progress bar for ``phase``."""
        prog = self.progress or NoProgress()
        prog.start(phase, total)
        out = await work(lambda: prog.advance(phase))
        prog.end(phase)
        return out

    def extraction_examples(self) -> list[Example]:
        """The training examples phase 1 asks the teacher about: all, or a stratified
        ``extract_max`` of them (the same seeded sample on every resume)."""
        n = self.cfg.extract_max
        return self.train if n is None else stratified_sample(self.train, n, self.cfg.seed)

    async def extract(self) -> Extracted:
        """Phase 1: one rule per training example (or a recorded failure)."""
        examples = self.extraction_examples()

        def produce() -> Awaitable[Extracted]:
            return self._shown(
                "extract",
                len(examples),
                lambda tick: extract(
                    self.task,
                    examples,
                    self.teacher,
                    max_attempts=self.cfg.extract_max_attempts,
                    max_tokens=self.cfg.extract_max_tokens,
                    name_cues=self.cfg.name_cues,
                    on_done=tick,
                ),
            )

        def load(rd: RunDir) -> Extracted:
            return (
                [RawRule(**r) for r in rd.read_jsonl("rules.jsonl")],
                [ExtractionFailure(**r) for r in rd.read_jsonl("extraction_failures.jsonl")],
            )

        def save(rd: RunDir, v: Extracted) -> None:
            rd.write_jsonl("rules.jsonl", [r.to_json() for r in v[0]])
            rd.write_jsonl("extraction_failures.jsonl", [f.to_json() for f in v[1]])

        rules, failures = await self.run.stage(
            "extract",
            produce,
            load,
            files=("rules.jsonl", "extraction_failures.jsonl"),
            save=save,
            summary=lambda v: {"rules": len(v[0]), "failures": len(v[1])},
        )
        if failures:
            log.warning(
                "extraction: %d of %d examples gave no valid rule (see extraction_failures.jsonl)",
                len(failures),
                len(examples),
            )
        if not rules:
            raise TeacherOutputError(
                f"extraction produced no valid rule from {len(examples)} examples; "
                "see extraction_failures.jsonl and use a stronger teacher"
            )
        return rules, failures

    async def synthesize(self, rules: list[RawRule]) -> tuple[InstructionSet, dict[str, Any]]:
        """Phase 2: cluster the rules and consolidate each cluster into an instruction."""
        cfg = self.cfg
        k = cfg.synthesis_candidates
        if k > 1 and not self.selection_items():
            log.warning("synthesis_candidates: no validation items to choose by; synthesizing once")
            k = 1

        async def produce() -> Synthesized:
            syns = await self._shown(
                "synthesize",
                None,
                lambda tick: synthesize_candidates(
                    self.task,
                    rules,
                    self.embedder,
                    self.teacher,
                    eps=cfg.eps,
                    min_samples=cfg.min_samples,
                    algorithm=cfg.cluster_algorithm,
                    auto_eps=cfg.auto_eps,
                    by_label=cfg.cluster_by_label,
                    budget_tokens=cfg.consolidate_budget_tokens,
                    max_tokens=cfg.consolidate_max_tokens,
                    seed=cfg.seed,
                    name_cues=cfg.name_cues,
                    candidates=k,
                    member_share=cfg.synthesis_share,
                    on_done=tick,
                ),
            )
            chosen, choice = await self._choose_synthesis(syns)
            return _synthesized(syns[chosen], choice)

        def save(rd: RunDir, v: Synthesized) -> None:
            rd.write_json("clusters.json", v[1])
            rd.write_jsonl("noise_rules.jsonl", v[2])
            if v[3] is not None:
                rd.write_json("synthesis_candidates.json", v[3])
            rd.write_text("instructions_v0.json", v[0].dumps())

        v0, clusters, _, _ = await self.run.stage(
            "synthesize",
            produce,
            lambda rd: (
                InstructionSet.from_json(rd.read_json("instructions_v0.json")),
                rd.read_json("clusters.json"),
                [],
                None,
            ),
            files=("instructions_v0.json", "clusters.json"),
            save=save,
            summary=_synthesize_summary,
        )
        missing = [lab for lab in self.task.labels if lab not in v0.labels_covered()]
        if missing:
            log.warning("no instruction decides label(s) %s: no valid rule for them", missing)
        return v0, clusters

    async def _choose_synthesis(
        self, syns: list[SynthesisResult]
    ) -> tuple[int, dict[str, Any] | None]:
        """Which synthesis candidate the fit continues from (``pld.decide.choose_synthesis``),
        with every candidate's instructions on record; (0, None) for a single synthesis."""
        if len(syns) == 1:
            return 0, None
        cfg = self.cfg
        sets = [s.instructions for s in syns]
        items = self.selection_items()
        chosen, rec = await self._shown(
            "choose synthesis",
            len(sets) * len(items),
            lambda tick: choose_synthesis(
                self.task,
                sets,
                items,
                self.student,
                calibrate=None if cfg.decide else cfg.calibrate,
                on_done=tick,
            ),
        )
        for row, s in zip(rec["candidates"], syns, strict=True):
            row["share"] = 1.0 if row["candidate"] == 0 else cfg.synthesis_share
            row["instruction_set"] = s.instructions.to_json()
            row["consolidation_failures"] = s.failures
        log.info("synthesis: %s", rec["reason"])
        return chosen, {**rec, "n_val": len(self.val), "n_pool": len(items) - len(self.val),
                        "chosen": chosen}  # fmt: skip

    def selection_items(self) -> list[Example]:
        """What synthesis candidates are scored on: validation, plus up to ``synthesis_pool``
        training items extraction did not ask about (a stratified, seeded sample). Items
        extraction did use are left out: a merge shown their rules would be favoured."""
        n = self.cfg.synthesis_pool  # > 0 only with extract_max (DistillConfig checks)
        if n == 0:
            return list(self.val)
        asked = {e.id for e in self.extraction_examples()}
        unused = [e for e in self.train if e.id not in asked]
        return [*self.val, *stratified_sample(unused, n, self.cfg.seed)]

    async def resolve(self, v0: InstructionSet) -> Resolved:
        """Phase 3: the teacher repairs the rulebook against the student's failures."""
        cfg = self.cfg
        settings = ResolveSettings(
            max_rounds=cfg.max_rounds,
            patience=cfg.patience,
            train_sample=cfg.resolve_train_sample,
            n_failures=cfg.resolve_failures,
            n_successes=cfg.resolve_successes,
            max_tokens=cfg.resolve_max_tokens,
            seed=cfg.seed,
            calibrate=cfg.calibrate,
            candidates=cfg.resolve_candidates,
            pool=cfg.resolve_pool,
            min_net=cfg.resolve_min_net,
            name_cues=cfg.name_cues,
            choose_calibration=(
                cfg.decide_confidence if cfg.decide and cfg.resolve_fit_calibration else None
            ),
        )
        rounds: list[dict[str, Any]] = []

        def on_round(rec: dict[str, Any]) -> None:
            rounds.append(rec)
            if self.run.dir is not None:
                self.run.dir.write_jsonl("rounds.jsonl", rounds)

        def produce() -> Awaitable[Resolved]:
            return self._shown(
                "resolve",
                None,
                lambda tick: resolve(
                    self.task,
                    v0,
                    self.train,
                    self.val,
                    self.student,
                    self.teacher,
                    settings,
                    on_round=on_round,
                    on_done=tick,
                ),
            )

        def load(rd: RunDir) -> Resolved:
            return (
                InstructionSet.from_json(rd.read_json("instructions.json")),
                rd.read_jsonl("rounds.jsonl"),
                [Prediction.from_json(p) for p in rd.read_jsonl("predictions_val.jsonl")],
            )

        def save(rd: RunDir, v: Resolved) -> None:
            rd.write_text("instructions.json", v[0].dumps())
            rd.write_jsonl("predictions_val.jsonl", [p.to_json() for p in v[2]])

        return await self.run.stage(
            "resolve",
            produce,
            load,
            files=("instructions.json", "rounds.jsonl", "predictions_val.jsonl"),
            save=save,
            summary=lambda v: _resolve_summary(v[1]),
        )

    async def finalize(self, best: InstructionSet, rounds: list[dict[str, Any]]) -> Rulebook:
        """Phase 4's artifact: the rulebook, with the exact bytes the student sees and (in a
        run directory, with calibration) the prior it was calibrated with. Always rebuilt:
        it is cheap, and its calibration calls are cached."""

        async def produce() -> Rulebook:
            rb = Rulebook.build(
                self.task,
                best,
                self.train,
                calibrate=self.cfg.calibrate,
                models=dict(self.run.state.get("models", {})),
                rounds=tuple(rounds),
                run_info=self.run.state,
                origin=self.run.path,
            )
            if not self.cfg.calibrate or self.run.dir is None:
                return rb
            prior = await label_prior(
                system_prompt=rb.system_prompt,
                user_template=rb.user_template,
                labels=rb.labels,
                student=self.student,
            )
            return replace(rb, calibration=calibration_record(prior))

        return await self.run.stage("finalize", produce, save=lambda rd, rb: rb.write_artifacts(rd))

    async def decide(self, rb: Rulebook) -> Decided:
        """Phase 5: the student-side decision (layout, calibration) fitted on validation, and
        the harm guard against the best zero-shot decision (``pld.decide``). No teacher call;
        the default layout's validation pass is the resolve stage's (cached), each other
        layout costs one validation pass. Always rerun, like ``finalize``: its calls are
        cached. With ``decide = false`` the rulebook is kept as finalized (no decision.json).

        It also returns, and writes to ``predictions_val.jsonl``, the validation predictions
        of the prompt it keeps — through ``Rulebook.apredict``, exactly as ``pld predict``
        will answer (every call is in the cache by then). Without this the file would hold
        the resolve stage's default-layout answers whenever another layout wins."""
        cfg = self.cfg
        if not cfg.decide:
            return rb, None
        settings = DecideSettings(
            layouts=cfg.decide_layouts,
            calibrate=cfg.calibrate,
            confidence=cfg.decide_confidence,
            if_worse=cfg.if_worse_than_zero_shot,
            seed=cfg.seed,
        )

        async def work(tick: Callable[[], None]) -> Decided:
            kept = await decide(rb, self.val, self.student, settings, tick)
            return kept, await kept.apredict(example_items(self.val), self.student)

        def save(rd: RunDir, v: Decided) -> None:
            v[0].write_artifacts(rd)
            if v[1] is not None:
                rd.write_jsonl("predictions_val.jsonl", [p.to_json() for p in v[1]])

        return await self.run.stage(
            "decide",
            lambda: self._shown("decide", None, work),
            save=save,
            summary=lambda v: _decide_summary(v[0]),
        )

    async def lint(self, rb: Rulebook) -> Rulebook:
        """The rulebook lint (``pld.lint``) on the final rulebook, saved as lint.json. No
        model call (the student's tokenizer counts the prompt when it has one), so it is
        rerun every time, like ``finalize``: a resume with another budget re-lints."""

        async def produce() -> Rulebook:
            record = lint_record(
                rb,
                self.train,
                budget_tokens=self.cfg.lint_budget_tokens,
                count_tokens=token_counter(self.student.model),
            )
            return replace(rb, lint=record)

        def save(rd: RunDir, v: Rulebook) -> None:
            rd.write_json("lint.json", dict(v.lint or {}))

        return await self.run.stage("lint", produce, save=save, summary=_lint_summary)


def _synthesized(syn: SynthesisResult, choice: dict[str, Any] | None) -> Synthesized:
    """The synthesize stage's output from the kept synthesis: v0 (with the choice among
    candidates in its notes, so it travels to prompt.md and the report), the clusters.json
    record, the noise rules and the choice's record."""
    c = syn.clustering
    clusters = {
        "algorithm": c.algorithm,
        "eps": c.eps,
        "min_samples": c.min_samples,
        "auto_eps": c.auto,
        "auto_eps_log": list(c.log),
        "n_clusters": c.n_clusters,
        "n_noise": len(syn.noise),
        "clusters": syn.clusters,
        "consolidation_failures": syn.failures,
    }
    v0 = syn.instructions
    if choice is not None:
        v0 = replace(v0, notes=(*v0.notes, f"synthesis: {choice['reason']}"))
    return v0, clusters, syn.noise, choice


def _synthesize_summary(v: Synthesized) -> dict[str, Any]:
    choice = v[3]
    return {
        "instructions": len(v[0]),
        "clusters": v[1]["n_clusters"],
        "noise": v[1]["n_noise"],
        "eps": v[1]["eps"],
        **(
            {}
            if choice is None
            else {"candidates": len(choice["candidates"]), "chosen": choice["chosen"]}
        ),
    }


def _lint_summary(rb: Rulebook) -> dict[str, Any]:
    rec = rb.lint or {}
    return {
        "findings": len(rec.get("findings", [])),
        "codes": sorted(rec.get("codes", {})),
        "prompt_tokens": rec.get("prompt_tokens"),
    }


def _decide_summary(rb: Rulebook) -> dict[str, Any]:
    d = rb.decision or {}
    guard = d.get("guard") or {}
    return {
        "layout": d.get("layout"),
        "calibrate": d.get("calibrate"),
        "val_macro_f1": d.get("val_macro_f1"),
        "zero_shot_val_macro_f1": guard.get("zero_shot_val_macro_f1"),
        "used": d.get("used"),
        "warning": rb.warning,
    }


def _resolve_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rounds": len(rounds) - 1,
        "accepted": sum(1 for r in rounds[1:] if r.get("accepted")),
        "val_macro_f1": rounds[0]["val_macro_f1"] if rounds else None,
        "best_val_macro_f1": max(
            (r.get("val_macro_f1", 0.0) for r in rounds if r.get("accepted")), default=None
        ),
    }
