"""``Distiller``: the estimator that runs the four phases over a run directory.

scikit-learn conventions: ``__init__`` only stores its arguments, ``fit`` returns ``self``,
learned state ends in ``_``, ``predict`` before ``fit`` raises ``NotFittedError``, and the
caller's model objects are wrapped, never mutated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pld import __version__
from pld._async import run_sync
from pld.cache import Cache, default_cache_path
from pld.config import DistillConfig
from pld.errors import ConfigError, NotFittedError, RunDirError, TeacherOutputError
from pld.models.base import ChatModel, Embedder
from pld.models.client import Accountant, ChatClient, EmbedClient, Limits, Price
from pld.models.registry import resolve_chat, resolve_embedder
from pld.phases.classify import CONTENT_FREE, Prediction, classify, label_prior
from pld.phases.extract import ExtractionFailure, RawRule, extract
from pld.phases.resolve import ResolveSettings, resolve, system_prompt_for
from pld.phases.synthesize import synthesize
from pld.rules import InstructionSet, render_markdown
from pld.rundir import RunDir
from pld.tasks.base import (
    Example,
    Task,
    require_all_labels,
    stratified_sample,
    stratified_split,
)

log = logging.getLogger(__name__)
PHASES = ("extract", "synthesize", "resolve", "finalize")


class Progress(Protocol):
    def start(self, phase: str, total: int | None) -> None: ...
    def advance(self, phase: str, n: int = 1) -> None: ...
    def end(self, phase: str) -> None: ...


class _NoProgress:
    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, phase: str, n: int = 1) -> None:
        pass

    def end(self, phase: str) -> None:
        pass


ModelArg = str | ChatModel
EmbedArg = str | Embedder


class Distiller:
    def __init__(
        self,
        teacher: ModelArg,
        student: ModelArg,
        embedder: EmbedArg | None = "local:smollm2",
        *,
        config: DistillConfig | None = None,
        cache: Cache | str | Path | None = None,
        use_cache: bool = True,
        prices: Mapping[str, Price] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.teacher = teacher
        self.student = student
        self.embedder = embedder
        self.config = config
        self.cache = cache
        self.use_cache = use_cache
        self.prices = prices
        self.progress = progress

    # -- plumbing ----------------------------------------------------------------------------
    def _cfg(self) -> DistillConfig:
        return self.config or DistillConfig()

    def _open_cache(self) -> Cache | None:
        if not self.use_cache:
            return None
        if isinstance(self.cache, Cache):
            return self.cache
        return Cache(self.cache or default_cache_path())

    def _clients(
        self, acct: Accountant, cache: Cache | None
    ) -> tuple[ChatClient, ChatClient, EmbedClient]:
        cfg = self._cfg()
        prices = self.prices or {}
        teacher = self.teacher if not isinstance(self.teacher, str) else resolve_chat(self.teacher)
        student = self.student if not isinstance(self.student, str) else resolve_chat(self.student)
        emb_arg = self.embedder if self.embedder is not None else "local:smollm2"
        embedder = emb_arg if not isinstance(emb_arg, str) else resolve_embedder(emb_arg)

        def limits(conc: int) -> Limits:
            return Limits(
                max_concurrency=conc,
                max_retries=cfg.max_retries,
                timeout_s=cfg.timeout_s,
                requests_per_minute=cfg.requests_per_minute,
                tokens_per_minute=cfg.tokens_per_minute,
            )

        return (
            ChatClient(
                teacher,
                role="teacher",
                accountant=acct,
                cache=cache,
                limits=limits(cfg.teacher_concurrency),
                price=prices.get("teacher"),
                seed=cfg.seed,
            ),
            ChatClient(
                student,
                role="student",
                accountant=acct,
                cache=cache,
                limits=limits(cfg.student_concurrency),
                price=prices.get("student"),
                seed=cfg.seed,
            ),
            EmbedClient(embedder, accountant=acct, cache=cache, limits=limits(1), seed=cfg.seed),
        )

    @staticmethod
    def _as_task(data: Task | Sequence[Example], task: Task | None) -> Task:
        if isinstance(data, Task):
            return data
        if task is None:
            raise ConfigError("pass task=Task(...) when fitting on a list of examples")
        return task.with_examples(data)

    # -- fit ---------------------------------------------------------------------------------
    def fit(
        self,
        train: Task | Sequence[Example],
        val: Task | Sequence[Example] | None = None,
        *,
        task: Task | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
        force: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> Distiller:
        return run_sync(
            self.afit(train, val, task=task, run_dir=run_dir, resume=resume, force=force, meta=meta)
        )

    async def afit(
        self,
        train: Task | Sequence[Example],
        val: Task | Sequence[Example] | None = None,
        *,
        task: Task | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
        force: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> Distiller:
        """Run the four phases. ``meta`` is stored in run.json (the CLI keeps its arguments
        there so ``--resume DIR`` needs no other flag)."""
        cfg = self._cfg()
        train_task = self._as_task(train, task)
        if val is None:
            sp = stratified_split(train_task.examples, fractions=(0.7, 0.3, 0.0), seed=cfg.seed)
            train_ex, val_ex = list(sp.train), list(sp.val)
        else:
            train_ex = list(train_task.examples)
            val_ex = list(self._as_task(val, train_task).examples)
        if cfg.max_train is not None:
            train_ex = stratified_sample(train_ex, cfg.max_train, cfg.seed)
        require_all_labels(train_ex, train_task.labels, "training")
        require_all_labels(val_ex, train_task.labels, "validation")
        t = train_task.with_examples(())

        rd = RunDir(run_dir, resume=resume, force=force) if run_dir is not None else None
        acct = Accountant(max_calls=cfg.max_calls, max_cost_usd=cfg.max_cost_usd)
        cache = self._open_cache()
        teacher, student, embedder = self._clients(acct, cache)
        prog = self.progress or _NoProgress()
        state: dict[str, Any] = {
            "pld_version": __version__,
            "task": {
                "name": t.name,
                "description": t.description,
                "labels": list(t.labels),
                "label_descriptions": dict(t.label_descriptions),
                "input_template": t.input_template,
            },
            "models": {
                "teacher": teacher.identity,
                "student": student.identity,
                "embedder": embedder.identity,
            },
            "config": cfg.to_json(),
            "n_train": len(train_ex),
            "n_val": len(val_ex),
            "train_ids": [e.id for e in train_ex],
            "val_ids": [e.id for e in val_ex],
            "phases": {},
            "cache": str(cache.path) if cache else None,
            **(meta or {}),
        }
        if rd is not None and resume:
            prev = rd.read_json("run.json")
            prev_cfg = DistillConfig.from_dict(prev.get("config", {})).outcome_settings()
            if prev.get("train_ids") != state["train_ids"] or prev_cfg != cfg.outcome_settings():
                raise ConfigError(
                    f"{rd.path} was started with different data or settings; resume it with "
                    "the same task, split and config, or start a new --out"
                )
            state["phases"] = {
                k: v for k, v in prev.get("phases", {}).items() if v.get("status") == "done"
            }
            # usage_by_role covers this process; earlier processes' usage is kept, not lost
            state["usage_earlier_processes"] = [
                *prev.get("usage_earlier_processes", []),
                {
                    "usage_by_role": prev.get("usage_by_role", {}),
                    "usage_by_phase": prev.get("usage_by_phase", {}),
                },
            ]

        def save_state() -> None:
            state["usage_by_role"] = acct.by_role()
            state["usage_by_phase"] = acct.by_phase()
            if rd is not None:
                rd.write_json("run.json", state)

        def done(phase: str, t0: float, **info: Any) -> None:
            state["phases"][phase] = {
                "status": "done",
                "wall_time_s": time.perf_counter() - t0,
                **info,
            }
            save_state()

        def have(phase: str, *files: str) -> bool:
            """A finished phase whose artifacts are all present and readable. A damaged one
            (half-written by an old version, edited by hand, truncated disk) is reported and
            the phase is recomputed — from the cache, so at no model cost."""
            if rd is None or phase not in state["phases"]:
                return False
            for f in files:
                if not rd.exists(f):
                    return False
                try:
                    rd.read_jsonl(f) if f.endswith(".jsonl") else rd.read_json(f)
                except RunDirError as e:
                    log.warning("%s; recomputing phase %s from the cache", e, phase)
                    self.damaged_artifacts_.append(f)
                    return False
            return True

        self.damaged_artifacts_: list[str] = []
        save_state()
        # Phase 1 — extract
        acct.phase = "extract"
        t0 = time.perf_counter()
        if have("extract", "rules.jsonl", "extraction_failures.jsonl"):
            assert rd is not None
            rules = [RawRule(**r) for r in rd.read_jsonl("rules.jsonl")]
            failures = [ExtractionFailure(**r) for r in rd.read_jsonl("extraction_failures.jsonl")]
        else:
            prog.start("extract", len(train_ex))
            rules, failures = await extract(
                t,
                train_ex,
                teacher,
                max_attempts=cfg.extract_max_attempts,
                max_tokens=cfg.extract_max_tokens,
                on_done=lambda: prog.advance("extract"),
            )
            prog.end("extract")
            if rd is not None:
                rd.write_jsonl("rules.jsonl", [r.to_json() for r in rules])
                rd.write_jsonl("extraction_failures.jsonl", [f.to_json() for f in failures])
            done("extract", t0, rules=len(rules), failures=len(failures))
        self.rules_, self.extraction_failures_ = rules, failures
        if failures:
            log.warning(
                "extraction: %d of %d examples gave no valid rule (see extraction_failures.jsonl)",
                len(failures),
                len(train_ex),
            )
        if not rules:
            raise TeacherOutputError(
                f"extraction produced no valid rule from {len(train_ex)} examples; "
                "see extraction_failures.jsonl and use a stronger teacher"
            )

        # Phase 2 — synthesize
        acct.phase = "synthesize"
        t0 = time.perf_counter()
        if have("synthesize", "instructions_v0.json", "clusters.json"):
            assert rd is not None
            v0 = InstructionSet.from_json(rd.read_json("instructions_v0.json"))
            self.clusters_ = rd.read_json("clusters.json")
        else:
            prog.start("synthesize", None)
            syn = await synthesize(
                t,
                rules,
                embedder,
                teacher,
                eps=cfg.eps,
                min_samples=cfg.min_samples,
                algorithm=cfg.cluster_algorithm,
                auto_eps=cfg.auto_eps,
                by_label=cfg.cluster_by_label,
                budget_tokens=cfg.consolidate_budget_tokens,
                max_tokens=cfg.consolidate_max_tokens,
                seed=cfg.seed,
                on_done=lambda: prog.advance("synthesize"),
            )
            prog.end("synthesize")
            v0 = syn.instructions
            c = syn.clustering
            self.clusters_ = {
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
            if rd is not None:
                rd.write_json("clusters.json", self.clusters_)
                rd.write_jsonl("noise_rules.jsonl", syn.noise)
                rd.write_text("instructions_v0.json", v0.dumps())
            done(
                "synthesize",
                t0,
                instructions=len(v0),
                clusters=c.n_clusters,
                noise=len(syn.noise),
                eps=c.eps,
            )
        missing = [lab for lab in t.labels if lab not in v0.labels_covered()]
        if missing:
            log.warning("no instruction decides label(s) %s: no valid rule for them", missing)

        # Phase 3 — resolve
        acct.phase = "resolve"
        t0 = time.perf_counter()
        settings = ResolveSettings(
            max_rounds=cfg.max_rounds,
            patience=cfg.patience,
            train_sample=cfg.resolve_train_sample,
            n_failures=cfg.resolve_failures,
            n_successes=cfg.resolve_successes,
            max_tokens=cfg.resolve_max_tokens,
            seed=cfg.seed,
            calibrate=cfg.calibrate,
        )
        rounds: list[dict[str, Any]] = []

        def on_round(rec: dict[str, Any]) -> None:
            rounds.append(rec)
            if rd is not None:
                rd.write_jsonl("rounds.jsonl", rounds)

        if have("resolve", "instructions.json", "rounds.jsonl", "predictions_val.jsonl"):
            assert rd is not None
            best = InstructionSet.from_json(rd.read_json("instructions.json"))
            rounds = rd.read_jsonl("rounds.jsonl")
            val_preds = [Prediction.from_json(p) for p in rd.read_jsonl("predictions_val.jsonl")]
        else:
            prog.start("resolve", None)
            best, rounds_out, val_preds = await resolve(
                t,
                v0,
                train_ex,
                val_ex,
                student,
                teacher,
                settings,
                on_round=on_round,
                on_done=lambda: prog.advance("resolve"),
            )
            prog.end("resolve")
            rounds = rounds_out
            if rd is not None:
                rd.write_text("instructions.json", best.dumps())
                rd.write_jsonl("predictions_val.jsonl", [p.to_json() for p in val_preds])
            done(
                "resolve",
                t0,
                rounds=len(rounds) - 1,
                accepted=sum(1 for r in rounds[1:] if r.get("accepted")),
                val_macro_f1=rounds[0]["val_macro_f1"] if rounds else None,
                best_val_macro_f1=max(
                    (r.get("val_macro_f1", 0.0) for r in rounds if r.get("accepted")), default=None
                ),
            )

        # Phase 4 artifacts: the exact bytes the student sees
        acct.phase = "finalize"
        self.task_ = t
        self.instructions_ = best
        self.instructions_v0_ = v0
        self.rounds_ = rounds
        self.val_predictions_ = val_preds
        self.system_prompt_ = system_prompt_for(t, best)
        self.user_template_ = t.input_template
        self.usage_ = {"by_role": acct.by_role(), "by_phase": acct.by_phase()}
        self._student_client: ChatClient | None = student
        if rd is not None:
            srcs = {e.id: t.render(e) for e in train_ex}
            rd.write_jsonl(
                "examples_train.jsonl",
                [{"id": e.id, "input": srcs[e.id], "label": e.label} for e in train_ex],
            )
            rd.write_text("system_prompt.txt", self.system_prompt_)
            rd.write_text("user_template.txt", self.user_template_)
            rd.write_text("prompt.md", render_markdown(best, task_name=t.name, sources=srcs))
            if cfg.calibrate:
                prior = await label_prior(
                    system_prompt=self.system_prompt_,
                    user_template=self.user_template_,
                    labels=t.labels,
                    student=student,
                )
                rd.write_json(
                    "calibration.json",
                    {
                        "method": "contextual calibration (Zhao et al. 2021)",
                        "content_free_inputs": list(CONTENT_FREE),
                        "prior": prior,
                    },
                )
            done("finalize", time.perf_counter())
            state["phases"]["finalize"]["wall_time_s"] = 0.0
            save_state()
        self.run_dir_ = rd.path if rd is not None else None
        return self

    # -- predict / save / load ---------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "system_prompt_"):
            raise NotFittedError("this Distiller is not fitted; call fit() or Distiller.load()")

    def predict(self, inputs: Sequence[Example | Mapping[str, str] | str]) -> list[Prediction]:
        return run_sync(self.apredict(inputs))

    async def apredict(
        self, inputs: Sequence[Example | Mapping[str, str] | str]
    ) -> list[Prediction]:
        self._check_fitted()
        if not hasattr(self, "_student_client") or self._student_client is None:
            acct = Accountant()
            model = (
                self.student if not isinstance(self.student, str) else resolve_chat(self.student)
            )
            self._student_client = ChatClient(
                model,
                role="student",
                accountant=acct,
                cache=self._open_cache(),
                limits=Limits(max_concurrency=self._cfg().student_concurrency),
            )
        items: list[tuple[str, Mapping[str, str], str | None]] = []
        for k, x in enumerate(inputs):
            if isinstance(x, Example):
                items.append((x.id, x.fields, x.label or None))
            elif isinstance(x, str):
                items.append((str(k), {"text": x}, None))
            else:
                items.append((str(x.get("id", k)), x, None))
        return await classify(
            items,
            system_prompt=self.system_prompt_,
            user_template=self.user_template_,
            labels=self.task_.labels,
            student=self._student_client,
            calibrate=self._cfg().calibrate,
        )

    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        rd = RunDir(path, force=True) if Path(path) != self.run_dir_ else RunDir(path, resume=True)
        rd.write_text("instructions.json", self.instructions_.dumps())
        rd.write_text("system_prompt.txt", self.system_prompt_)
        rd.write_text("user_template.txt", self.user_template_)
        rd.write_text("prompt.md", render_markdown(self.instructions_, task_name=self.task_.name))
        if not rd.exists("run.json"):
            rd.write_json(
                "run.json",
                {
                    "pld_version": __version__,
                    "task": {
                        "name": self.task_.name,
                        "description": self.task_.description,
                        "labels": list(self.task_.labels),
                        "label_descriptions": dict(self.task_.label_descriptions),
                        "input_template": self.task_.input_template,
                    },
                },
            )
        return rd.path

    @classmethod
    def load(cls, path: str | Path, *, student: ModelArg, **kw: Any) -> Distiller:
        rd = RunDir(path, resume=True)
        run = rd.read_json("run.json")
        tk = run["task"]
        if "config" not in kw and run.get("config"):
            kw["config"] = DistillConfig.from_dict(run["config"])
        d = cls(teacher=student, student=student, embedder=None, **kw)
        d.task_ = Task(
            tk["name"],
            tk["description"],
            tuple(tk["labels"]),
            (),
            tk["input_template"],
            tk.get("label_descriptions", {}),
        )
        d.instructions_ = InstructionSet.from_json(rd.read_json("instructions.json"))
        d.system_prompt_ = rd.file("system_prompt.txt").read_text(encoding="utf-8")
        d.user_template_ = rd.file("user_template.txt").read_text(encoding="utf-8")
        d.rounds_ = rd.read_jsonl("rounds.jsonl") if rd.exists("rounds.jsonl") else []
        d.run_dir_ = rd.path
        d._student_client = None  # built on first predict
        return d
