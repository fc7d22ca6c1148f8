"""Phase 2 — synthesis: embed the raw rules, cluster them, and have the teacher merge each
cluster into one ``topic + instruction``.

Paper defaults: DBSCAN, cosine distance, eps 0.4, min_samples 6, noise dropped. Two guards the
paper lacks: when the defaults give no usable clustering (all noise, or one cluster — typical
for small training sets) eps is chosen from the k-distance distribution and the choice logged;
and every label keeps at least one instruction (synthesis tends to drop minority labels), built
from that label's noise rules.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pld._async import gather_all
from pld.models.client import ChatClient, EmbedClient
from pld.phases._teacher import ask_json
from pld.phases.extract import RawRule
from pld.prompts import consolidate_prompt, consolidate_schema
from pld.rulecheck import condition_words, rule_problem
from pld.rules import Instruction, InstructionSet
from pld.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusteringResult:
    """Which cluster each rule fell in, and the settings (chosen or given) that did it."""

    assignments: tuple[int, ...]  # cluster index per rule, -1 = noise
    eps: float
    min_samples: int
    algorithm: str
    auto: bool
    log: tuple[str, ...] = ()

    @property
    def n_clusters(self) -> int:
        """Clusters found (noise excluded)."""
        return len({a for a in self.assignments if a >= 0})


@dataclass
class SynthesisResult:
    """The v0 instruction set with the records clusters.json and noise_rules.jsonl keep."""

    instructions: InstructionSet
    clustering: ClusteringResult
    clusters: list[dict[str, Any]] = field(default_factory=list)
    noise: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def _normalise(x: NDArray[np.float32]) -> NDArray[np.float32]:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n == 0, 1.0, n)).astype(np.float32)


def _dbscan(x: NDArray[np.float32], eps: float, min_samples: int) -> NDArray[np.int64]:
    from sklearn.cluster import DBSCAN

    # Cosine distance on unit vectors == euclidean**2 / 2, so run euclidean (tree-indexable,
    # memory ~ O(n * neighbours) rather than an n*n matrix) at the equivalent radius.
    radius = float(np.sqrt(max(2.0 * eps, 0.0)))
    return np.asarray(DBSCAN(eps=radius, min_samples=min_samples).fit_predict(x), dtype=np.int64)


def _hdbscan(x: NDArray[np.float32], min_samples: int) -> NDArray[np.int64]:
    from sklearn.cluster import HDBSCAN

    return np.asarray(
        HDBSCAN(
            min_cluster_size=max(2, min_samples), min_samples=min_samples, copy=True
        ).fit_predict(x),
        dtype=np.int64,
    )


def _usable(a: NDArray[np.int64], min_clusters: int) -> bool:
    return len({int(v) for v in a if v >= 0}) >= min_clusters


def cluster_rules(
    vectors: NDArray[np.float32],
    *,
    eps: float = 0.4,
    min_samples: int = 6,
    algorithm: str = "dbscan",
    auto_eps: bool = True,
    min_clusters: int = 2,
) -> ClusteringResult:
    """DBSCAN (or HDBSCAN) on cosine distance. "Usable" means at least ``min_clusters``
    clusters (2 over all rules; 1 within a single label's rules)."""
    x = _normalise(np.asarray(vectors, dtype=np.float32))
    n = x.shape[0]
    if n == 0:
        return ClusteringResult((), eps, min_samples, algorithm, False)
    if algorithm == "hdbscan":
        a = _hdbscan(x, min_samples) if n > min_samples else np.full(n, -1, dtype=np.int64)
        return ClusteringResult(tuple(int(v) for v in a), eps, min_samples, "hdbscan", False)
    a = _dbscan(x, eps, min_samples)
    if _usable(a, min_clusters) or not auto_eps or n < 4:
        return ClusteringResult(tuple(int(v) for v in a), eps, min_samples, "dbscan", False)

    from sklearn.neighbors import NearestNeighbors

    ms = max(2, min(min_samples, n // 8))
    k = min(ms, n - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    kdist = (dist[:, k] ** 2) / 2.0  # back to cosine distance
    why = (
        f"eps={eps}, min_samples={min_samples} gave "
        f"{len({v for v in a if v >= 0})} cluster(s) over {n} rules"
    )
    trail = [why]
    best: tuple[tuple[int, float], float, NDArray[np.int64]] | None = None
    for q in range(10, 95, 5):
        cand = float(np.percentile(kdist, q))
        if cand <= 0:
            continue
        b = _dbscan(x, cand, ms)
        nc = len({int(v) for v in b if v >= 0})
        noise = float(np.mean(b < 0))
        trail.append(f"eps={cand:.3f} (k-dist p{q}): {nc} clusters, noise {noise:.0%}")
        score = (nc if noise <= 0.5 else -1, -noise)
        if nc >= min_clusters and (best is None or score > best[0]):
            best = (score, cand, b)
    if best is None:
        trail.append(f"no eps gave >= {min_clusters} clusters; keeping the default result")
        log.info("auto-eps: %s", "; ".join(trail))
        return ClusteringResult(
            tuple(int(v) for v in a), eps, min_samples, "dbscan", True, tuple(trail)
        )
    _, chosen, b = best
    trail.append(f"chose eps={chosen:.3f}, min_samples={ms}")
    log.info("auto-eps: %s", "; ".join(trail))
    return ClusteringResult(tuple(int(v) for v in b), chosen, ms, "dbscan", True, tuple(trail))


# Words that describe the classification task itself rather than evidence in the input.
_TASK_TALK = frozenset(
    "task classify classifies classification given determine decide which one following "
    "specified possible category categories sentence sentences text texts input domain "
    "domains belongs belong type types kind analyze analyse analyzing cues specific".split()
)

_LABEL_CLAUSE = re.compile(
    r",?\s*(?:then\s+)?(?:the\s+)?label\s+(?:is|should be)\b.*$", re.I | re.S
)


def condition_text(rule: str) -> str:
    """The rule without its "then the label is X" clause: what is embedded, so rules cluster by
    their conditions rather than by the shared template."""
    stripped = _LABEL_CLAUSE.sub("", rule).strip()
    return stripped if len(stripped.split()) >= 3 else rule


def _cluster_by_label(
    rules: Sequence[RawRule],
    vectors: NDArray[np.float32],
    *,
    eps: float,
    min_samples: int,
    algorithm: str,
    auto_eps: bool,
) -> ClusteringResult:
    assignments = [-1] * len(rules)
    log_lines: list[str] = []
    auto = False
    next_id = 0
    used_eps: list[float] = []
    for lab in sorted({r.label for r in rules}):
        idx = [i for i, r in enumerate(rules) if r.label == lab]
        res = cluster_rules(
            vectors[idx],
            eps=eps,
            min_samples=min_samples,
            algorithm=algorithm,
            auto_eps=auto_eps,
            min_clusters=1,
        )
        auto = auto or res.auto
        used_eps.append(res.eps)
        log_lines += [f"[{lab}] {line}" for line in res.log] or [
            f"[{lab}] eps={res.eps:.3f}: {res.n_clusters} cluster(s) over {len(idx)} rules"
        ]
        remap: dict[int, int] = {}
        for i, c in zip(idx, res.assignments, strict=True):
            if c >= 0:
                if c not in remap:
                    remap[c] = next_id
                    next_id += 1
                assignments[i] = remap[c]
    return ClusteringResult(
        tuple(assignments),
        float(np.median(used_eps)) if used_eps else eps,
        min_samples,
        f"{algorithm} per label",
        auto,
        tuple(log_lines),
    )


def _member_sources(task: Task, example_ids: Iterable[str]) -> list[str]:
    """The rendered inputs with these ids: what a consolidated rule must not copy."""
    ids = set(example_ids)
    return [task.render(e) for e in task.examples if e.id in ids]


def _fit_budget(
    members: Sequence[RawRule], budget_tokens: int, rng: random.Random, share: float = 1.0
) -> list[RawRule]:
    """Sample a cluster's rules to fit the consolidation prompt budget (~4 chars/token), and
    at most ``share`` of them (at least one)."""
    order = list(members)
    rng.shuffle(order)
    if share < 1.0:
        order = order[: max(1, math.ceil(share * len(order)))]
    out: list[RawRule] = []
    used = 0
    for r in order:
        cost = len(r.rule) // 4 + 8
        if out and used + cost > budget_tokens:
            break
        out.append(r)
        used += cost
    return out


async def _consolidate(
    task: Task,
    members: Sequence[RawRule],
    teacher: ChatClient,
    *,
    budget_tokens: int,
    max_tokens: int,
    max_attempts: int,
    rng: random.Random,
    name_cues: bool = False,
    share: float = 1.0,
) -> tuple[str, str, tuple[str, ...], str | None]:
    """Return (topic, instruction, labels, failure reason or None)."""
    shown = _fit_budget(members, budget_tokens, rng, share)
    prompt = consolidate_prompt(
        task.description,
        task.labels,
        task.label_descriptions,
        [(r.label, r.rule) for r in shown],
        name_cues,
    )
    counts = Counter(r.label for r in members)
    majority = tuple(lab for lab, c in counts.most_common() if c >= 0.25 * len(members))
    srcs = _member_sources(task, (r.example_id for r in members))
    task_words = set(condition_words(task.description, task.labels)) | _TASK_TALK

    def validate(obj: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
        topic = str(obj.get("topic", "")).strip()
        text = " ".join(str(obj.get("instruction", "")).split())
        if len(text.split()) < 4 or not topic:
            raise ValueError("topic and an instruction of >= 4 words are required")
        cues = [w for w in condition_words(text, task.labels) if w not in task_words]
        if len(cues) < 3:
            raise ValueError("the instruction restates the task; name the cues to look for")
        if problem := rule_problem(text, srcs, task.labels):
            raise ValueError(f"the instruction was refused: {problem}")
        labels = tuple(dict.fromkeys(x for x in obj.get("labels", []) if x in task.labels))
        if len(counts) == 1:  # a label-pure cluster decides its own label, whatever is claimed
            labels = tuple(counts)
        return topic, text, labels or majority

    ans = await ask_json(
        teacher,
        prompt,
        validate,
        schema=consolidate_schema(task.labels),
        max_tokens=max_tokens,
        max_attempts=max_attempts,
    )
    if ans.value is not None:
        return (*ans.value, None)
    # Fall back to the cluster's most typical rule (recorded), rather than losing the cluster.
    medoid = max(members, key=lambda r: (rule_problem(r.rule) is None, counts[r.label]))
    return f"{medoid.label} rule", medoid.rule, majority, ans.error


Job = tuple[str, list[int]]  # (name, indices of the rules it consolidates)
Merged = tuple[str, str, tuple[str, ...], str | None]  # topic, text, labels, failure


async def synthesize(
    task: Task,
    rules: Sequence[RawRule],
    embedder: EmbedClient,
    teacher: ChatClient,
    **kw: Any,
) -> SynthesisResult:
    """The one synthesis of the paper's phase 2 (``synthesize_candidates``' first)."""
    return (await synthesize_candidates(task, rules, embedder, teacher, candidates=1, **kw))[0]


async def synthesize_candidates(
    task: Task,
    rules: Sequence[RawRule],
    embedder: EmbedClient,
    teacher: ChatClient,
    *,
    eps: float = 0.4,
    min_samples: int = 6,
    algorithm: str = "dbscan",
    auto_eps: bool = True,
    budget_tokens: int = 1500,
    max_tokens: int = 300,
    max_attempts: int = 2,
    seed: int = 0,
    by_label: bool = True,
    name_cues: bool = False,
    candidates: int = 1,
    member_share: float = 2 / 3,
    on_done: Callable[[], None] | None = None,
) -> list[SynthesisResult]:
    """``candidates`` consolidations of one clustering. The first is the paper's synthesis
    (every cluster's rules, up to the prompt budget); each other one shows the teacher its own
    seeded ``member_share`` of each cluster's rules, so the merges differ as two teachers'
    would; the caller chooses among them on validation. Each candidate costs one teacher call
    per cluster. Measured on the stereotype scheme (bench/RESULTS.md): four such merges lay
    within ±0.04 macro-F1 of each other on test, and 60 validation items did not rank them as
    test did, so the choice needs a selection set large enough to tell merges apart.

    ``by_label`` (default) clusters each label's rules separately. The paper clusters all
    rules together; measured here, rules written in one template ("If ..., then the label is
    X") cluster by their wording, so global clusters mixed every label and the teacher merged
    them into instructions that only restated the task (bench/RESULTS.md, section 2)."""
    vectors = await embedder.embed([condition_text(r.rule) for r in rules])
    clustering = _clustering(
        rules, vectors, by_label, eps=eps, min_samples=min_samples, algorithm=algorithm,
        auto_eps=auto_eps,
    )  # fmt: skip
    cluster_jobs, noise_idx = _cluster_jobs(clustering)

    async def one(k: int) -> SynthesisResult:
        # candidate 0 draws exactly as a single synthesis always has (recorded runs replay)
        rng = random.Random(seed if k == 0 else f"{seed}/candidate-{k}")
        share = 1.0 if k == 0 else member_share

        async def run_jobs(batch: list[Job]) -> list[Merged]:
            rngs = [random.Random(rng.random()) for _ in batch]

            async def run(j: int) -> Merged:
                out = await _consolidate(
                    task,
                    [rules[i] for i in batch[j][1]],
                    teacher,
                    budget_tokens=budget_tokens,
                    max_tokens=max_tokens,
                    max_attempts=max_attempts,
                    rng=rngs[j],
                    name_cues=name_cues,
                    share=share,
                )
                if on_done is not None:
                    on_done()
                return out

            return await gather_all(run(j) for j in range(len(batch)))

        jobs = list(cluster_jobs)
        merged = await run_jobs(jobs)
        # Label coverage guard (the paper's synthesis drops minority labels): a label that no
        # consolidated instruction decides gets one, from its noise rules (or, if it had none,
        # from its clustered rules), and that instruction decides exactly that label.
        guard_jobs = _coverage_jobs(task, rules, merged, noise_idx)
        guarded = await run_jobs(guard_jobs)
        guarded = [
            (topic, text, (job[0].removeprefix("coverage-"),), fail)
            for job, (topic, text, _, fail) in zip(guard_jobs, guarded, strict=True)
        ]
        return _assemble(rules, clustering, jobs + guard_jobs, merged + guarded, noise_idx)

    return list(await gather_all(one(k) for k in range(candidates)))


def _clustering(
    rules: Sequence[RawRule],
    vectors: NDArray[np.float32],
    by_label: bool,
    *,
    eps: float,
    min_samples: int,
    algorithm: str,
    auto_eps: bool,
) -> ClusteringResult:
    """The rules' clusters: within each label's rules (``by_label``) or across all of them."""
    if by_label:
        return _cluster_by_label(
            rules, vectors, eps=eps, min_samples=min_samples, algorithm=algorithm, auto_eps=auto_eps
        )
    return cluster_rules(
        vectors, eps=eps, min_samples=min_samples, algorithm=algorithm, auto_eps=auto_eps
    )


def _cluster_jobs(clustering: ClusteringResult) -> tuple[list[Job], list[int]]:
    """One consolidation job per cluster, largest first, and the indices of the noise rules."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(clustering.assignments):
        groups.setdefault(c, []).append(i)
    cluster_ids = sorted((c for c in groups if c >= 0), key=lambda c: (-len(groups[c]), c))
    return [(f"cluster-{c}", groups[c]) for c in cluster_ids], groups.get(-1, [])


def _coverage_jobs(
    task: Task, rules: Sequence[RawRule], merged: Sequence[Merged], noise_idx: Sequence[int]
) -> list[Job]:
    """One consolidation job per label that no merged instruction decides."""
    covered = {lab for _, _, labs, _ in merged for lab in labs}
    guard_jobs: list[Job] = []
    for lab in task.labels:
        if lab in covered:
            continue
        own = [i for i in noise_idx if rules[i].label == lab] or [
            i for i, r in enumerate(rules) if r.label == lab
        ]
        if own:
            guard_jobs.append((f"coverage-{lab}", own))
            log.info("label %r has no instruction: synthesizing one from %d rules", lab, len(own))
    return guard_jobs


def _assemble(
    rules: Sequence[RawRule],
    clustering: ClusteringResult,
    jobs: Sequence[Job],
    merged: Sequence[Merged],
    noise_idx: Sequence[int],
) -> SynthesisResult:
    """Instructions (with provenance) and the records of clusters, noise and failures."""
    instructions: list[Instruction] = []
    clusters: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    covered_from_noise: set[int] = set()
    noise_set = set(noise_idx)
    for k, ((name, idx), (topic, text, labels, fail)) in enumerate(zip(jobs, merged, strict=True)):
        iid = f"R{k + 1}"
        origin = "coverage guard" if name.startswith("coverage") else "cluster"
        if name.startswith("coverage"):
            covered_from_noise.update(i for i in idx if i in noise_set)
        hist: tuple[str, ...] = (f"synthesized from {len(idx)} rules ({origin})",)
        if fail:
            hist = (*hist, f"teacher consolidation failed ({fail}); kept the typical rule")
            failures.append({"instruction": iid, "job": name, "reason": fail})
        instructions.append(
            Instruction(iid, topic, text, labels, tuple(rules[i].example_id for i in idx), hist)
        )
        clusters.append(
            {
                "instruction": iid,
                "job": name,
                "size": len(idx),
                "labels": dict(Counter(rules[i].label for i in idx)),
                "rules": [rules[i].example_id for i in idx],
            }
        )
    noise = [
        {
            **rules[i].to_json(),
            "reason": (
                f"DBSCAN noise: fewer than {clustering.min_samples} rules within cosine "
                f"distance {clustering.eps:.3f}"
            )
            + ("; used by the label coverage guard" if i in covered_from_noise else "; dropped"),
        }
        for i in noise_idx
    ]
    notes = tuple(clustering.log)
    return SynthesisResult(
        InstructionSet(tuple(instructions), 0, notes), clustering, clusters, noise, failures
    )
