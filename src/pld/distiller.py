"""``Distiller``: the estimator that fits a ``Rulebook`` by running the four stages over a
``Run``.

scikit-learn conventions: ``__init__`` only stores its arguments, ``fit`` returns ``self``,
learned state ends in ``_``, ``predict`` before ``fit`` raises ``NotFittedError``, and the
caller's model objects are wrapped, never mutated. The fitted artifact is ``rulebook_``; the
stages themselves live in ``pld.stages``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

from pld import batchrun
from pld._async import run_sync
from pld._version import __version__
from pld.cache import Cache, default_cache_path
from pld.config import DistillConfig
from pld.errors import ConfigError, LintFailed, NotFittedError, TeacherDeferred
from pld.lint import Finding, findings_of, strict_message
from pld.models.base import ChatModel, Embedder
from pld.models.client import Accountant, ChatClient, EmbedClient, Limits, Price
from pld.models.registry import (
    SPEC_HELP,
    redact_spec,
    redact_specs,
    resolve_chat,
    resolve_embedder,
)
from pld.predictions import Prediction, as_items
from pld.progress import Progress
from pld.rulebook import Rulebook, task_to_json
from pld.rules import InstructionSet
from pld.run import Run, previous_ledger
from pld.stages import Fitting
from pld.taskref import DEFAULT_SPLIT, TaskRef
from pld.tasks.base import (
    Example,
    Split,
    Task,
    require_all_labels,
    stratified_sample,
    stratified_split,
)

PHASES = ("extract", "synthesize", "resolve", "finalize", "decide", "lint")


class FitOptions(TypedDict, total=False):
    """``fit``'s options: ``task`` (when fitting on a list of examples), ``run_dir`` (where
    the artifacts go; in memory without), ``resume``, ``force`` and ``meta`` (kept in
    run.json)."""

    task: Task | None
    run_dir: str | Path | None
    resume: bool
    force: bool
    meta: Mapping[str, Any] | None


ModelArg = str | ChatModel
EmbedArg = str | Embedder


class Distiller:
    """Distil ``teacher``'s reasoning into a rulebook the ``student`` follows zero-shot.

    Models are spec strings (``local:smollm2``, ``openai:gpt-4.1-mini``) or ``ChatModel`` /
    ``Embedder`` objects; every call goes through one cached, rate-limited client per role, so
    a refit or a resumed run re-pays nothing.

    ``teacher_batch=DIR`` sends no teacher request: the requests a phase needs are written to
    DIR as an OpenAI Batch file and ``fit`` raises ``TeacherBatchPending`` (see ``pld.batch``);
    after the results are imported (``pld teacher import``) a resumed fit continues.
    """

    def __init__(
        self,
        teacher: ModelArg | None,
        student: ModelArg,
        embedder: EmbedArg | None = "local:smollm2",
        *,
        config: DistillConfig | None = None,
        cache: Cache | str | Path | None = None,
        use_cache: bool = True,
        prices: Mapping[str, Price] | None = None,
        progress: Progress | None = None,
        teacher_batch: str | Path | None = None,
    ) -> None:
        self.teacher = teacher
        self.student = student
        self.embedder = embedder
        self.config = config
        self.cache = cache
        self.use_cache = use_cache
        self.prices = prices
        self.progress = progress
        self.teacher_batch = teacher_batch

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
        assert self.teacher is not None  # afit refuses a teacherless Distiller first
        cfg = self._cfg()
        prices = self.prices or {}
        limits = {
            n: Limits(
                max_concurrency=n,
                max_retries=cfg.max_retries,
                timeout_s=cfg.timeout_s,
                requests_per_minute=cfg.requests_per_minute,
                tokens_per_minute=cfg.tokens_per_minute,
            )
            for n in {cfg.teacher_concurrency, cfg.student_concurrency, 1}
        }
        # a batch-mode teacher sends nothing, so an openai: spec needs no API key
        key = batchrun.BATCH_ONLY_KEY if self.teacher_batch is not None else None
        teacher, student = (
            ChatClient(
                m if not isinstance(m, str) else resolve_chat(m, api_key=k),
                role=role,
                accountant=acct,
                cache=cache,
                limits=limits[conc],
                price=prices.get(role),
                seed=cfg.seed,
            )
            for m, role, conc, k in (
                (self.teacher, "teacher", cfg.teacher_concurrency, key),
                (self.student, "student", cfg.student_concurrency, None),
            )
        )
        emb_arg = self.embedder if self.embedder is not None else "local:smollm2"
        embedder = emb_arg if not isinstance(emb_arg, str) else resolve_embedder(emb_arg)
        return (
            teacher,
            student,
            EmbedClient(embedder, accountant=acct, cache=cache, limits=limits[1], seed=cfg.seed),
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
        **options: Unpack[FitOptions],
    ) -> Distiller:
        """Fit the rulebook (see ``afit``) and return ``self``."""
        return run_sync(self.afit(train, val, **options))

    def _prepare(
        self,
        train: Task | Sequence[Example],
        val: Task | Sequence[Example] | None,
        task: Task | None,
    ) -> tuple[Task, list[Example], list[Example]]:
        """The task spec and the train/val examples (a seeded 70/30 split when no val)."""
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
        return train_task.with_examples(()), train_ex, val_ex

    async def afit(
        self,
        train: Task | Sequence[Example],
        val: Task | Sequence[Example] | None = None,
        **options: Unpack[FitOptions],
    ) -> Distiller:
        """Run extract → synthesize → resolve → finalize → decide → lint, each stage writing
        its artifacts to ``run_dir`` before the next starts. ``resume`` continues an
        interrupted run there; ``meta`` is stored in run.json (the CLI keeps its arguments
        there so ``--resume DIR`` needs no other flag). In teacher batch mode a phase whose
        teacher replies are not all imported yet writes its requests and raises
        ``TeacherBatchPending``. With ``lint_strict`` any lint finding raises ``LintFailed``
        once the run is complete and saved (the fitted state is set, so the caller can still
        read it)."""
        if self.teacher is None:
            raise ConfigError(
                "this Distiller has no teacher (Distiller.load gives one that only predicts); "
                "to fit, create Distiller(teacher=SPEC, student=SPEC)"
            )
        cfg = self._cfg()
        t, train_ex, val_ex = self._prepare(train, val, options.get("task"))
        acct = Accountant(max_calls=cfg.max_calls, max_cost_usd=cfg.max_cost_usd)
        cache = self._open_cache()
        resume, force = options.get("resume", False), options.get("force", False)
        with Run(options.get("run_dir"), acct, resume=resume, force=force) as run:
            teacher, student, embedder = self._clients(acct, cache)
            run.begin(
                {
                    "pld_version": __version__,
                    "task": task_to_json(t),
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
                    **(options.get("meta") or {}),
                }
            )
            self.damaged_artifacts_ = run.damaged
            batch = (
                batchrun.attach(teacher, run, self.teacher_batch)
                if self.teacher_batch is not None
                else None
            )
            f = Fitting(t, train_ex, val_ex, cfg, teacher, student, embedder, run, self.progress)
            try:
                await self._stages(f)
            except TeacherDeferred:
                if batch is None:
                    raise
                hint = redact_spec(self.teacher) if isinstance(self.teacher, str) else "SPEC"
                raise batchrun.pending(run, batch, model_hint=hint) from None
        self.usage_ = run.usage()
        # the ledger as last saved (at close, after every call): what run.json holds
        self.ledger_: dict[str, Any] = run.state
        self._student_client: ChatClient | None = student
        self.run_dir_ = run.path
        if cfg.lint_strict and self.lint_:
            where = str(run.path) if run.path is not None else "the rulebook"
            raise LintFailed(
                strict_message(self.lint_, where, saved=True), findings=tuple(self.lint_)
            )
        return self

    async def _stages(self, f: Fitting) -> None:
        self.rules_, self.extraction_failures_ = await f.extract()
        self.instructions_v0_, self.clusters_ = await f.synthesize(self.rules_)
        best, self.rounds_, self.val_predictions_ = await f.resolve(self.instructions_v0_)
        decided, val_predictions = await f.decide(await f.finalize(best, self.rounds_))
        if val_predictions is not None:  # the kept prompt's answers, as `pld predict` gives
            self.val_predictions_ = val_predictions
        self.rulebook_ = await f.lint(decided)
        self.lint_: list[Finding] = findings_of(self.rulebook_.lint)

    # -- the fitted rulebook, as the estimator's learned state --------------------------------
    @property
    def task_(self) -> Task:
        """The task spec the rulebook was fitted for."""
        return self._fitted().task

    @property
    def instructions_(self) -> InstructionSet:
        """The final instruction set (after resolve)."""
        return self._fitted().instructions

    @property
    def system_prompt_(self) -> str:
        """The exact system prompt the student is sent."""
        return self._fitted().system_prompt

    @property
    def user_template_(self) -> str:
        """The template each input is rendered through."""
        return self._fitted().user_template

    def _fitted(self) -> Rulebook:
        rb: Rulebook | None = getattr(self, "rulebook_", None)
        if rb is None:
            raise NotFittedError("this Distiller is not fitted; call fit() or Distiller.load()")
        return rb

    # -- predict / save / load ---------------------------------------------------------------
    def predict(self, inputs: Sequence[Example | Mapping[str, str] | str]) -> list[Prediction]:
        """Classify ``inputs`` with the fitted rulebook (exactly its saved prompt bytes)."""
        return run_sync(self.apredict(inputs))

    async def apredict(
        self, inputs: Sequence[Example | Mapping[str, str] | str]
    ) -> list[Prediction]:
        """``predict`` for use inside an event loop."""
        rb = self._fitted()
        client: ChatClient | None = getattr(self, "_student_client", None)
        if client is None:
            model = (
                self.student if not isinstance(self.student, str) else resolve_chat(self.student)
            )
            client = ChatClient(
                model,
                role="student",
                accountant=Accountant(),
                cache=self._open_cache(),
                limits=Limits(max_concurrency=self._cfg().student_concurrency),
            )
            self._student_client = client
        return await rb.apredict(as_items(inputs), client)

    def save(self, path: str | Path) -> Path:
        """Save the fitted rulebook to ``path`` (see ``Rulebook.save``)."""
        return self._fitted().save(path)

    @classmethod
    def load(cls, path: str | Path, *, student: ModelArg, **kw: Any) -> Distiller:
        """A fitted Distiller from a finished run directory, predicting with ``student``."""
        rb = Rulebook.load(path)
        if "config" not in kw and rb.run_info.get("config"):
            kw["config"] = DistillConfig.from_dict(rb.run_info["config"])
        d = cls(teacher=None, student=student, embedder=None, **kw)
        d.rulebook_ = rb
        d.rounds_ = [dict(r) for r in rb.rounds]
        d.run_dir_ = rb.origin
        d._student_client = None  # built on first predict
        return d


@dataclass(frozen=True)
class DistillPlan:
    """What ``pld distill`` runs: the arguments (kept in run.json so ``--resume DIR`` needs no
    other flag), the settings, the task and its split."""

    args: dict[str, Any]
    config: DistillConfig
    task: Task
    split: Split

    @property
    def meta(self) -> dict[str, Any]:
        """What the run's ledger keeps besides the fit's own record."""
        return {"cli": redact_specs(self.args), "test_ids": [e.id for e in self.split.test]}


def plan_distill(
    args: Mapping[str, Any],
    config: DistillConfig,
    overrides: Mapping[str, Any],
    *,
    resume_dir: str | Path | None = None,
) -> DistillPlan:
    """Resolve ``pld distill``'s arguments: on resume the run's saved arguments and config
    fill what was not given (its split always wins), ``overrides`` apply on top, and the task
    is loaded and split exactly as the first time."""
    merged = dict(args)
    if resume_dir is not None:
        prev = previous_ledger(resume_dir)
        for k, v in prev.get("cli", {}).items():
            if merged.get(k) is None or (k == "split" and v):
                merged[k] = v
        if prev.get("config"):
            config = DistillConfig.from_dict(prev["config"])
    config = config.with_overrides(**overrides)
    ref = TaskRef.from_args(merged)
    for k in ("teacher", "student"):
        if not merged.get(k):
            raise ConfigError(f"--{k} is required ({SPEC_HELP})")
    task, split = ref.split(str(merged.get("split") or DEFAULT_SPLIT), config.seed)
    return DistillPlan(merged, config, task, split)
