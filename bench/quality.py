"""Quality: PLD against every alternative on the same split, same student.

    python -m bench.quality --dataset stereoset-domain --students qwen-1.5b,smollm2 \
        --teacher qwen-1.5b [--n-train 48 --n-val 30 --n-test 90 --cot-n 30]

Datasets (from ../shared/data): stereoset-domain, stereoset-stereotype (intrasentence, split by
cluster) and contract-nli (train_truncated for distillation, test for evaluation; premises
shortened to fit the student's context by the documented ``retrieve`` strategy).

Methods per student: zero-shot, few-shot (k=5), CoT, PLD after synthesis (instructions_v0),
PLD after resolve (zero-shot, few-shot and both PLD prompts also uncalibrated, ``-raw``); plus the
teacher's own zero-shot score — except for ``--teacher frontier``, whose replies a frontier LLM
writes as files (bench.teacher_endpoint) and which must never see a test item. Everything
goes through one cache (bench/results/quality/cache.sqlite) and results are written after
every method, so the run can be interrupted anywhere and rerun with the same command to
continue where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS, SHARED_DATA, machine, write_json
from bench.models import MODELS, fetch
from bench.teacher_endpoint import TeacherEndpoint, check_no_test_items
from pld.cache import Cache
from pld.config import DistillConfig
from pld.distiller import PHASES, Distiller
from pld.evaluate import mcnemar_counts, method_result, run_method
from pld.metrics import summary
from pld.models.client import Accountant, ChatClient, Limits
from pld.models.registry import resolve_chat
from pld.phases.classify import classify
from pld.phases.layouts import render_layout
from pld.predictions import Prediction, example_items
from pld.prompts import Prompt, student_prompt
from pld.rulebook import Rulebook
from pld.rules import InstructionSet
from pld.run import previous_ledger
from pld.rundir import RunDir
from pld.stages import Fitting
from pld.tasks.base import Example, Task, stratified_sample, stratified_split
from pld.tasks.datasets import load_contract_nli, load_stereoset

FRONTIER = "frontier"


def spec(name: str, dataset: str) -> str:
    if name != "smollm2":
        return f"local:{fetch(name)}?ctx=8192"
    # Contract-NLI few-shot prompts (5 contract excerpts) need more than the default context.
    return "local:smollm2?ctx=8192" if dataset == "contract-nli" else "local:smollm2"


def load(
    dataset: str, n_train: int, n_val: int, n_test: int, seed: int, max_chars: int
) -> tuple[Task, list[Example], list[Example], list[Example]]:
    if dataset.startswith("stereoset-"):
        t = load_stereoset(
            SHARED_DATA / "stereoset" / "stereoset.json", scheme=dataset.split("-", 1)[1]
        )
        sp = stratified_split(t.examples, fractions=(0.5, 0.2, 0.3), seed=seed)
        train, val, test = sp.train, sp.val, sp.test
    elif dataset == "contract-nli":
        d = SHARED_DATA / "contract_nli"
        pool = load_contract_nli(d / "train_truncated.json", max_premise_chars=max_chars)
        t = load_contract_nli(d / "test.json", max_premise_chars=max_chars)
        sp = stratified_split(pool.examples, fractions=(0.7, 0.3, 0.0), seed=seed)
        train, val, test = sp.train, sp.val, t.examples
    else:
        raise SystemExit(f"unknown dataset {dataset}")
    return (
        t.with_examples(()),
        stratified_sample(train, n_train, seed),
        stratified_sample(val, n_val, seed),
        stratified_sample(test, n_test, seed),
    )


def distill_config(max_rounds: int, seed: int) -> DistillConfig:
    """The ``small`` preset, sized for a 1.5B teacher generating ~5-8 tokens/s on 2 cores."""
    return DistillConfig.preset(
        "small",
        max_rounds=max_rounds,
        seed=seed,
        resolve_failures=8,
        consolidate_max_tokens=250,
        resolve_max_tokens=500,
        teacher_concurrency=1,
    )


# A rerun with a larger ``--n-test`` answers only the items it adds: the sample is nested, and
# each recorded answer is what the student cache would replay (same prompt, same item). The
# first SPOT_CHECK recorded items are answered again all the same; one disagreement and every
# item is answered anew.
SPOT_CHECK = 3


def carried_predictions(old: Mapping[str, Any] | None, items: list[Example]) -> list[Prediction]:
    """``old``'s recorded answers to ``items``, as the cache replays they stand for (their
    latency is not on record: the p50 is of the items answered in this process); none unless
    every recorded item is in ``items``, or if any overflowed the context (the record does
    not say which)."""
    if not old or "_pred" not in old or old.get("context_overflow"):
        return []
    if not set(old["_pred"]) <= {e.id for e in items}:
        return []
    pred = old["_pred"]
    return [
        Prediction(e.id, pred[e.id], "", None, 0.0, 0, 0, 0, True, e.label)
        for e in items
        if e.id in pred
    ]


def score(
    model_spec: str,
    key: str,
    method: str,
    task: Task,
    items: list[Example],
    cache: Cache,
    prompt: Prompt | None = None,
    *,
    train: list[Example],
    seed: int,
    calibrate: bool = True,
    carried: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score one method on ``items`` with pld's metrics; a given ``prompt`` is used as is.
    ``carried``, the method's row scored on part of ``items``, lends its answers
    (``carried_predictions``) so only the other items cost a call."""
    acct = Accountant()
    client = ChatClient(
        resolve_chat(model_spec),
        role="student",
        accountant=acct,
        cache=cache,
        limits=Limits(max_concurrency=1),
    )

    def answer(part: list[Example]) -> tuple[Prompt, list[Prediction]]:
        if prompt is not None:
            return prompt, asyncio.run(
                classify(
                    example_items(part),
                    system_prompt=prompt.system,
                    user_template=prompt.user_template,
                    labels=task.labels,
                    student=client,
                    calibrate=calibrate,
                    shots=prompt.shots,
                )
            )
        return asyncio.run(
            run_method(method, task, part, client, train=train, seed=seed, calibrate=calibrate)
        )

    t0 = time.perf_counter()
    kept = carried_predictions(carried, items)
    checked = {p.id for p in kept[:SPOT_CHECK]}
    kept = [p for p in kept if p.id not in checked]
    ids = {p.id for p in kept}
    used, preds = answer([e for e in items if e.id not in ids])
    recorded = carried["_pred"] if carried else {}
    differ = [p.id for p in preds if p.id in checked and p.label != recorded[p.id]]
    if differ:
        print(f"{key} {method}: {differ} answered otherwise than on record: all anew", flush=True)
        used, more = answer([e for e in items if e.id in ids])
        preds, kept = [*preds, *more], []
    order = {e.id: i for i, e in enumerate(items)}
    every = sorted([*preds, *kept], key=lambda p: order[p.id])
    r = method_result(method, used, every, task.labels, acct.total_cost)
    if kept:
        assert carried is not None
        # latency from this process's answers only (a carried answer has none on record)
        answered = summary(preds, task.labels, ci=False)
        r.update({k: answered[k] for k in ("latency_p50_s", "latency_p95_s")})
        n = len(every)
        for f, per in (
            ("prompt_tokens", "prompt_tokens_per_item"),
            ("completion_tokens", "completion_tokens_per_item"),
        ):
            r[per] = (sum(getattr(p, f) for p in preds) + carried[per] * len(kept)) / n
        r["carried_over"] = {
            "items": len(kept),
            "spot_checked": len(checked),  # each agreed, or nothing would be carried
            "from_n": carried["n"],
            "from_wall_s": carried.get("wall_s"),
            "from_student_calls": carried.get("student_calls"),
        }
    r["wall_s"] = time.perf_counter() - t0
    r["student_calls"] = acct.total_calls
    r["_correct"] = {p.id: p.correct for p in every}
    r["_pred"] = {p.id: p.label for p in every}
    print(
        f"{key} {method}: macro-F1 {r['macro_f1']:.3f} [{r['macro_f1_ci95'][0]:.2f}, "
        f"{r['macro_f1_ci95'][1]:.2f}] n={r['n']}"
        + (f" ({len(kept)} answers carried over)" if kept else ""),
        flush=True,
    )
    return r


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="stereoset-domain")
    ap.add_argument("--students", default="qwen-1.5b,smollm2")
    ap.add_argument(
        "--teacher",
        default="qwen-1.5b",
        help="a local model name, or 'frontier': a frontier LLM answering request files "
        "through bench.teacher_endpoint (its transcript is kept in the results folder)",
    )
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--n-val", type=int, default=30)
    ap.add_argument("--n-test", type=int, default=90)
    ap.add_argument("--cot-n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-rounds", type=int, default=2)
    ap.add_argument(
        "--max-chars",
        type=int,
        default=1200,
        help="Contract-NLI: contracts longer than this are shortened to the segments that share "
        "most words with the hypothesis (the 1.5B model prefills ~30 tokens/s here)",
    )
    ap.add_argument(
        "--teacher-only",
        action="store_true",
        help="run extraction and synthesis only (teacher, embedder; no student call, except "
        "the validation passes that choose among --synthesis-candidates) and stop: "
        "records a frontier teacher's replies while the CPU is busy elsewhere; the same "
        "command without this flag resumes the run from there",
    )
    ap.add_argument(
        "--name-cues",
        action="store_true",
        help="DistillConfig.name_cues: the teacher may name recurring cue terms; a variant of "
        "the run in its own folder (DATASET-frontier-cues), PLD rows only: its baselines are "
        "the base run's, on the same split",
    )
    ap.add_argument(
        "--extract-max",
        type=int,
        help="DistillConfig.extract_max: extract from a stratified N of the training examples "
        "and give the teacher budget saved to resolve (with --max-rounds, --resolve-candidates, "
        "--patience); a variant in its own folder (DATASET-frontier-xN-rRcKpP), PLD rows only. "
        "Its extraction requests are the base run's, so they replay the base's recorded replies",
    )
    ap.add_argument("--resolve-candidates", type=int, help="DistillConfig.resolve_candidates")
    ap.add_argument(
        "--synthesis-candidates",
        type=int,
        help="DistillConfig.synthesis_candidates: K syntheses chosen on validation; a variant "
        "(folder suffix -sK), PLD rows only",
    )
    ap.add_argument(
        "--synthesis-pool",
        type=int,
        help="DistillConfig.synthesis_pool: up to N training items extraction did not use join "
        "validation in choosing the synthesis (with --extract-max; folder suffix -sKuN)",
    )
    ap.add_argument("--patience", type=int, help="DistillConfig.patience")
    a = ap.parse_args()
    for m in [*([] if a.teacher == FRONTIER else [a.teacher]), *a.students.split(",")]:
        if m != "smollm2" and m not in MODELS:
            raise SystemExit(
                f"unknown model {m}; choose smollm2, {FRONTIER} or {', '.join(MODELS)}"
            )
    return a


def main() -> None:
    a = parse_args()
    frontier = a.teacher == FRONTIER
    # Earlier runs (a local teacher) keep their folder; the frontier run gets its own.
    out_dir = RESULTS / "quality" / (f"{a.dataset}-frontier" if frontier else a.dataset)
    base_dir = out_dir
    out_dir = out_dir.with_name(out_dir.name + variant_suffix(a))
    out_dir.mkdir(parents=True, exist_ok=True)
    res_path = out_dir / "results.json"
    res: dict[str, Any] = json.loads(res_path.read_text()) if res_path.exists() else {}
    res.update(machine=machine(), args=vars(a))
    res.setdefault("students", {})
    task, train, val, test = load(a.dataset, a.n_train, a.n_val, a.n_test, a.seed, a.max_chars)
    res.update(
        task=task.name, n_train=len(train), n_val=len(val), n_test=len(test), notes=list(task.notes)
    )
    bench = Bench(a, res, res_path, out_dir, task, train, val, test)
    if not frontier:
        bench.run(spec(a.teacher, a.dataset), teacher_zero_shot=True)
    else:
        teacher_dir = out_dir / "teacher"
        replay = replay_sources(base_dir, out_dir)
        with TeacherEndpoint(teacher_dir, replay_from=replay) as ep:
            print(f"frontier teacher: answer files in {teacher_dir}/pending", flush=True)
            bench.run(ep.spec, teacher_zero_shot=False, teacher_concurrency=8)
        res["teacher_transcript"] = check_no_test_items(teacher_dir, (task.render(e) for e in test))
        bench.save()
    print("saved", res_path)


def replay_sources(base_dir: Path, out_dir: Path) -> list[Path]:
    """The recorded transcripts a variant replays identical requests from: the base run's,
    then every other variant's of the same dataset (a -s4 variant of -x60-r15c4p3 shares that
    run's merges and resolve requests, not only the base's extractions). The base run replays
    nothing: its transcript is the recording."""
    if out_dir == base_dir:
        return []
    others = sorted(
        p / "teacher"
        for p in base_dir.parent.glob(f"{base_dir.name}-*")
        if p != out_dir and (p / "teacher").is_dir()
    )
    return [base_dir / "teacher", *others]


def variant_suffix(a: argparse.Namespace) -> str:
    """The folder suffix of a PLD-only variant of the base run ("" for the base run)."""
    out = "-cues" if a.name_cues else ""
    if a.extract_max or a.resolve_candidates or a.patience:
        cfg = variant_config(a)
        out += (
            f"-x{cfg.extract_max or a.n_train}-r{cfg.max_rounds}c{cfg.resolve_candidates}"
            f"p{cfg.patience}"
        )
    if a.synthesis_candidates:
        out += f"-s{a.synthesis_candidates}" + (f"u{a.synthesis_pool}" if a.synthesis_pool else "")
    return out


def variant_config(a: argparse.Namespace) -> DistillConfig:
    """The run's DistillConfig: the bench's, with the variant's settings (None keeps one)."""
    return distill_config(a.max_rounds, a.seed).with_overrides(
        name_cues=a.name_cues,
        extract_max=a.extract_max,
        resolve_candidates=a.resolve_candidates,
        patience=a.patience,
        synthesis_candidates=a.synthesis_candidates,
        synthesis_pool=a.synthesis_pool,
    )


class _TeacherPhasesDone(Exception):
    """Raised by ``_TeacherPhases`` once synthesis is saved."""


class _TeacherPhases(Distiller):
    """A Distiller that stops after synthesis (``--teacher-only``): both stages are saved in
    the run directory, so the full run resumes from them."""

    async def _stages(self, f: Fitting) -> None:
        rules, _ = await f.extract()
        await f.synthesize(rules)
        raise _TeacherPhasesDone


def distill_record(d: Distiller, wall_s: float) -> dict[str, Any]:
    """What a fit cost and produced, as results.json keeps it per student."""
    return {
        "wall_s_this_process": wall_s,
        "usage_by_role": d.usage_["by_role"],
        "usage_by_phase": d.usage_["by_phase"],
        "rules": len(d.rules_),
        "extraction_failures": len(d.extraction_failures_),
        "instructions_v0": len(d.instructions_v0_),
        "instructions": len(d.instructions_),
        "rounds": d.rounds_,
    }


@dataclass
class Bench:
    """One dataset's quality run; every method's result is saved as soon as it exists."""

    a: argparse.Namespace
    res: dict[str, Any]
    res_path: Path
    out_dir: Path
    task: Task
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def save(self) -> None:
        write_json(self.res_path, self.res)

    def evaluate(
        self,
        model_spec: str,
        key: str,
        method: str,
        prompt: Prompt | None = None,
        items: list[Example] | None = None,
        calibrate: bool = True,
        carried: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return score(
            model_spec,
            key,
            method,
            self.task,
            self.test if items is None else items,
            Cache(RESULTS / "quality" / "cache.sqlite"),
            prompt,
            train=self.train,
            seed=self.a.seed,
            calibrate=calibrate,
            carried=carried,
        )

    def scored(self, st: dict[str, Any], name: str, items: list[Example] | None = None) -> bool:
        """Whether ``name`` is on record for these items: the whole test set, or, for a
        method run on a part of it (CoT's first ``cot_n``), as many items, all still in the
        test set. A rerun with a larger ``--n-test`` rescores what was scored on fewer (the
        stratified sample is nested, so the items scored before are carried over and only the
        new ones cost a call: ``score``) and keeps CoT's items, which it would otherwise
        redo at ~30 s each: sorted by id, the larger sample's first ``cot_n`` are others."""
        r = st["methods"].get(name)
        if r is None:
            return False
        have, test = set(r["_correct"]), {e.id for e in self.test}
        if items is None:
            return have == test
        return have <= test and len(have) == len(items)

    def method(self, st: dict[str, Any], name: str, *args: Any, **kw: Any) -> bool:
        """Score ``name`` unless it is on record for its items; True when it was scored now."""
        if self.scored(st, name, kw.get("items")):
            return False
        kw["carried"] = st["methods"].get(name)
        st["methods"][name] = self.evaluate(*args, **kw)
        self.save()
        return True

    @staticmethod
    def fit_on_record(st: dict[str, Any], run: Path) -> bool:
        """Whether ``run`` holds a finished fit that results.json recorded: a rerun that
        scores more items then loads the rulebook instead of resuming the fit, whose decide
        stage (always rerun, its calls cached) would redo ~300 validation calls on a machine
        without the student cache."""
        if "distill" not in st or not (run / "run.json").exists():
            return False
        phases = previous_ledger(run).get("phases", {})
        return all(phases.get(p, {}).get("status") == "done" for p in PHASES)

    def run(
        self, teacher_spec: str, *, teacher_zero_shot: bool, teacher_concurrency: int = 1
    ) -> None:
        if teacher_zero_shot and "teacher_zero_shot" not in self.res:
            self.res["teacher_zero_shot"] = self.evaluate(teacher_spec, "teacher", "zero-shot")
            self.save()
        for student in self.a.students.split(","):
            self.student(student, teacher_spec, teacher_concurrency)

    def student(self, student: str, teacher_spec: str, teacher_concurrency: int) -> None:
        a, task = self.a, self.task
        st = self.res["students"].setdefault(student, {"methods": {}})
        s_spec = spec(student, a.dataset)
        baselines = not variant_suffix(a)  # a variant's baselines are the base run's
        if not a.teacher_only and baselines:
            self.method(st, "zero-shot", s_spec, student, "zero-shot")
            self.method(st, "zero-shot-raw", s_spec, student, "zero-shot", calibrate=False)
        run = self.out_dir / f"run-{student}"
        if a.teacher_only or not self.fit_on_record(st, run):
            t0 = time.perf_counter()
            cfg = dataclasses.replace(variant_config(a), teacher_concurrency=teacher_concurrency)
            d = (_TeacherPhases if a.teacher_only else Distiller)(
                teacher_spec,
                s_spec,
                "local:smollm2",
                cache=Cache(RESULTS / "quality" / "cache.sqlite"),
                config=cfg,
            )
            try:
                d.fit(
                    task.with_examples(self.train),
                    task.with_examples(self.val),
                    run_dir=run,
                    resume=(run / "run.json").exists(),
                    force=not (run / "run.json").exists(),
                )
            except _TeacherPhasesDone:
                print(f"{student}: extraction and synthesis recorded in {run}", flush=True)
                return
            st["distill"] = distill_record(d, time.perf_counter() - t0)
        else:
            print(f"{student}: the fit in {run} is on record; not refitted", flush=True)
        rb = Rulebook.load(run)
        if self.method(st, "pld", s_spec, student, "pld", rb.prompt, calibrate=rb.calibrate):
            st["methods"]["pld"]["decision"] = rb.decision
            self.save()
        zs = rb.zero_shot_decision
        if baselines and zs is not None:
            zp, cal = render_layout(str(zs["layout"]), task, None), bool(zs["calibrate"])
            fitted = "zero-shot-fitted"
            if self.method(st, fitted, s_spec, student, fitted, zp, calibrate=cal):
                st["methods"][fitted]["decision"] = dict(zs)
                self.save()
        # the ablation rows after pld's own: the synthesized rules, then the final rules with
        # the default decision (layout "default", calibrated)
        v0 = RunDir(run, read_only=True).load("instructions_v0.json", InstructionSet.from_json)
        synth = student_prompt(task, v0)
        self.method(st, "pld-synth", s_spec, student, "pld-synth", synth)
        self.method(st, "pld-synth-raw", s_spec, student, "pld-synth", synth, calibrate=False)
        undecided = student_prompt(task, rb.instructions)
        self.method(st, "pld-undecided", s_spec, student, "pld-undecided", undecided)
        self.method(
            st, "pld-undecided-raw", s_spec, student, "pld-undecided", undecided, calibrate=False
        )
        # the baselines that cost most last (few-shot prefills k demonstrations, CoT decodes),
        # so an interrupted run already has PLD against zero-shot
        if baselines:
            self.method(st, "few-shot", s_spec, student, "few-shot")
            # the same answers read raw (cached distributions, no new call), as zero-shot and
            # PLD are: a baseline whose calibrated answers collapse onto one label is not
            # judged by that
            self.method(st, "few-shot-raw", s_spec, student, "few-shot", calibrate=False)
            self.method(st, "cot", s_spec, student, "cot", items=self.test[: a.cot_n])
        pld_ok = st["methods"]["pld"]["_correct"]
        for m, r in st["methods"].items():
            if m != "pld":
                r["mcnemar_vs_pld"] = mcnemar_counts(r["_correct"], pld_ok)
        self.save()


if __name__ == "__main__":
    main()
