"""Distillation settings: one frozen, validated dataclass, loadable from TOML."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pld.errors import ConfigError

# The student prompt layouts the decide stage may choose from (rendered by pld.phases.layouts).
LAYOUT_NAMES = ("default", "fields", "rules_after_input", "weigh_all")
# The layouts tried by default: every one keeps the rulebook in a prefix the engine caches.
# ``rules_after_input`` puts the rules after each input, so every call (in the decide pass and
# in production) prefills the whole rulebook again — about 10x the prompt tokens per item for
# a 500-token rulebook — which defeats the latency case for pld; it stays available on request.
DEFAULT_LAYOUTS = ("default", "fields", "weigh_all")
GUARD_ACTIONS = ("keep", "warn", "fallback")


@dataclass(frozen=True)
class DistillConfig:
    """Every setting of a distillation. Frozen and validated on construction, so a bad value
    fails before any model call; ``outcome_settings`` are the ones a resume must keep."""

    seed: int = 0
    # phases 1-3: let the teacher name cue terms that recur across inputs (a group, role or
    # technical term) instead of only describing their kind, for students that do not know
    # which terms are of that kind (pld.prompts explains; off, as in the paper)
    name_cues: bool = False
    # phase 1
    extract_max_attempts: int = 3
    extract_max_tokens: int = 320
    max_train: int | None = None
    # ask the teacher about only a stratified ``extract_max`` of the training examples (one
    # call each); every later phase still uses the whole training set. Under a fixed teacher
    # budget this frees calls from extraction, where rules repeat (bench/RESULTS.md: half the
    # extraction lost nothing on the StereoSet stereotype scheme; the wider resolve it paid for
    # accepted nothing)
    extract_max: int | None = None
    # phase 2 (paper: DBSCAN, cosine, eps 0.4, min_samples 6)
    cluster_algorithm: str = "dbscan"
    eps: float = 0.4
    min_samples: int = 6
    auto_eps: bool = True
    cluster_by_label: bool = True  # the paper clusters all rules together (False)
    consolidate_budget_tokens: int = 1500
    consolidate_max_tokens: int = 300
    # synthesize this many rule sets from one clustering and resolve from the one the student
    # scores best on validation: the first is the paper's synthesis, each other one shows the
    # teacher a seeded ``synthesis_share`` of every cluster's rules (one teacher call per
    # cluster and candidate, one student validation pass per candidate). Off by default: on
    # the stereotype scheme four merges lay within ±0.04 test macro-F1 and 60 validation items
    # did not rank them as test did (bench/RESULTS.md)
    synthesis_candidates: int = 1
    synthesis_share: float = 2 / 3
    # up to this many training items that extraction did not ask about (only with
    # ``extract_max``) join validation in that choice: 60 validation items could not rank
    # merges ±0.04 apart (bench/RESULTS.md); items whose rules fed a merge would favour it
    synthesis_pool: int = 0
    # phase 3
    max_rounds: int = 3
    patience: int = 1
    resolve_train_sample: int = 48
    resolve_failures: int = 12
    resolve_successes: int = 6
    resolve_max_tokens: int = 700
    # phase 3's search and acceptance: candidates per round (each one teacher request, from its
    # own failure sample), held-back training items added to validation to score them, and the
    # net items a candidate must fix (fixed minus broken) to be accepted
    resolve_candidates: int = 2
    resolve_pool: int = 48
    resolve_min_net: int = 2
    # judge candidates under the calibration the decide stage would pick for the synthesized
    # set (chosen on validation, by decide's rule); off: under ``calibrate`` as configured.
    # Only with ``decide`` on.
    resolve_fit_calibration: bool = True
    # phase 4: contextual calibration of the student's label distribution (the default the
    # decide stage starts from)
    calibrate: bool = True
    # phase 5: the decision fitted on validation (layout, calibration) and the harm guard
    decide: bool = True
    decide_layouts: tuple[str, ...] = DEFAULT_LAYOUTS
    decide_confidence: float = 0.9
    if_worse_than_zero_shot: str = "warn"
    # the rulebook lint at the end of the fit (pld.lint): the fixed prompt's token budget, and
    # whether any finding fails the fit (after every artifact is saved). Both only change what
    # the lint reports, which is recomputed on every run, so a resume may change them.
    lint_budget_tokens: int = 1500
    lint_strict: bool = False
    # clients
    teacher_concurrency: int = 4
    student_concurrency: int = 1
    max_retries: int = 4
    timeout_s: float = 600.0
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_calls: int | None = None
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        positive = (
            "extract_max_attempts",
            "extract_max_tokens",
            "min_samples",
            "consolidate_budget_tokens",
            "consolidate_max_tokens",
            "synthesis_candidates",
            "patience",
            "resolve_train_sample",
            "resolve_failures",
            "resolve_max_tokens",
            "resolve_candidates",
            "resolve_min_net",
            "teacher_concurrency",
            "student_concurrency",
            "lint_budget_tokens",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_rounds < 0:
            raise ConfigError("max_rounds must be >= 0 (0 skips conflict resolution)")
        if not 0.0 < self.eps < 2.0:
            raise ConfigError(f"eps is a cosine distance in (0, 2), got {self.eps}")
        if self.cluster_algorithm not in ("dbscan", "hdbscan"):
            raise ConfigError(
                f"cluster_algorithm must be dbscan or hdbscan, got {self.cluster_algorithm!r}"
            )
        if self.max_train is not None and self.max_train < 1:
            raise ConfigError("max_train must be >= 1")
        if self.extract_max is not None and self.extract_max < 1:
            raise ConfigError("extract_max must be >= 1 (or unset: extract from every example)")
        if not 0.0 < self.synthesis_share <= 1.0:
            raise ConfigError(
                f"synthesis_share is the share of a cluster's rules each extra synthesis "
                f"candidate shows the teacher, in (0, 1], got {self.synthesis_share}"
            )
        if self.resolve_successes < 0:
            raise ConfigError("resolve_successes must be >= 0")
        if self.synthesis_pool < 0:
            raise ConfigError("synthesis_pool must be >= 0 (0 chooses on validation only)")
        if self.synthesis_pool and (self.extract_max is None or self.synthesis_candidates < 2):
            raise ConfigError(
                "synthesis_pool adds training items extraction did not use to the choice among "
                "synthesis candidates: set extract_max and synthesis_candidates >= 2, or "
                "synthesis_pool = 0"
            )
        if self.resolve_pool < 0:
            raise ConfigError("resolve_pool must be >= 0 (0 scores candidates on validation only)")
        self._check_decision()

    def _check_decision(self) -> None:
        # TOML and run.json give a list; a tuple keeps the config hashable and equal on resume
        object.__setattr__(self, "decide_layouts", tuple(self.decide_layouts))
        unknown = [x for x in self.decide_layouts if x not in LAYOUT_NAMES]
        if unknown:
            raise ConfigError(
                f"unknown decide_layouts {unknown}; choose from {', '.join(LAYOUT_NAMES)}"
            )
        if not 0.5 <= self.decide_confidence <= 1.0:
            raise ConfigError(
                f"decide_confidence is a share of bootstrap resamples in [0.5, 1], got "
                f"{self.decide_confidence}"
            )
        if self.if_worse_than_zero_shot not in GUARD_ACTIONS:
            raise ConfigError(
                f"if_worse_than_zero_shot must be one of {', '.join(GUARD_ACTIONS)}, got "
                f"{self.if_worse_than_zero_shot!r}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DistillConfig:
        """A named preset (see ``PRESETS``) with ``overrides`` (None values are ignored)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
        return cls.from_dict(dict(PRESETS[name])).with_overrides(**overrides)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        """From a mapping (TOML, run.json); unknown keys are refused by name."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(str(e)) from e

    @classmethod
    def from_toml(cls, path: str | Path) -> DistillConfig:
        """From a TOML file of ``key = value`` settings."""
        try:
            d = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        return cls.from_dict(d)

    def with_overrides(self, **kw: Any) -> DistillConfig:
        """A copy with the given settings changed (None means "keep")."""
        d = asdict(self)
        d.update({k: v for k, v in kw.items() if v is not None})
        return self.from_dict(d)

    def to_json(self) -> dict[str, Any]:
        """Every setting, as run.json stores it."""
        return asdict(self)

    def outcome_settings(self) -> dict[str, Any]:
        """The settings that change what a run produces. Budgets, rates and concurrency may
        differ between a run and its resume (raising a cap is how a capped run continues)."""
        return {k: v for k, v in asdict(self).items() if k not in OPERATIONAL}


OPERATIONAL = frozenset(
    {
        "teacher_concurrency",
        "student_concurrency",
        "max_retries",
        "timeout_s",
        "requests_per_minute",
        "tokens_per_minute",
        "max_calls",
        "max_cost_usd",
        "lint_budget_tokens",
        "lint_strict",
    }
)


PRESETS: dict[str, dict[str, Any]] = {
    # Small, offline models on a few CPU cores (the embedded SmolLM2 as teacher and student):
    # short teacher replies, a small resolve sample, one student request at a time. Used by
    # ``pld demo`` and, with their documented overrides, by bench/quality.py and bench/cost.py.
    "small": {
        "max_rounds": 2,
        "patience": 1,
        "resolve_train_sample": 24,
        "resolve_failures": 6,
        "resolve_successes": 4,
        "extract_max_tokens": 200,
        "consolidate_max_tokens": 200,
        "resolve_max_tokens": 400,
        "resolve_pool": 24,
        "teacher_concurrency": 2,
        "student_concurrency": 1,
    },
}
