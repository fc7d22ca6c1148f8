"""Quality: PLD against every alternative on the same split, same student.

    python -m bench.quality --dataset stereoset-domain --students qwen-1.5b,smollm2 \
        --teacher qwen-1.5b [--n-train 48 --n-val 30 --n-test 90 --cot-n 30]

Datasets (from ../shared/data): stereoset-domain, stereoset-stereotype (intrasentence, split by
cluster) and contract-nli (train_truncated for distillation, test for evaluation; premises
shortened to fit the student's context by the documented ``retrieve`` strategy).

Methods per student: zero-shot, few-shot (k=5), CoT, PLD after synthesis (instructions_v0),
PLD after resolve; plus the teacher's own zero-shot score. Everything goes through one cache
(bench/results/quality/cache.sqlite) and results are written after every method, so the run
can be interrupted anywhere and rerun with the same command to continue where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.common import RESULTS, SHARED_DATA, machine
from bench.models import MODELS, fetch
from pld.cache import Cache
from pld.config import DistillConfig
from pld.distiller import Distiller
from pld.evaluate import mcnemar_counts, method_result, run_method
from pld.models.client import Accountant, ChatClient, Limits
from pld.models.registry import resolve_chat
from pld.phases.classify import classify
from pld.phases.layouts import render_layout
from pld.predictions import example_items
from pld.prompts import Prompt, student_prompt
from pld.rulebook import Rulebook
from pld.tasks.base import Example, Task, stratified_sample, stratified_split
from pld.tasks.datasets import load_contract_nli, load_stereoset


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
) -> dict[str, Any]:
    """Score one method on ``items`` with pld's metrics; a given ``prompt`` is used as is."""
    acct = Accountant()
    client = ChatClient(
        resolve_chat(model_spec),
        role="student",
        accountant=acct,
        cache=cache,
        limits=Limits(max_concurrency=1),
    )
    t0 = time.perf_counter()
    if prompt is not None:
        preds = asyncio.run(
            classify(
                example_items(items),
                system_prompt=prompt.system,
                user_template=prompt.user_template,
                labels=task.labels,
                student=client,
                calibrate=calibrate,
            )
        )
    else:
        prompt, preds = asyncio.run(
            run_method(method, task, items, client, train=train, seed=seed, calibrate=calibrate)
        )
    r = method_result(method, prompt, preds, task.labels, acct.total_cost)
    r["wall_s"] = time.perf_counter() - t0
    r["student_calls"] = acct.total_calls
    r["_correct"] = {p.id: p.correct for p in preds}
    print(
        f"{key} {method}: macro-F1 {r['macro_f1']:.3f} [{r['macro_f1_ci95'][0]:.2f}, "
        f"{r['macro_f1_ci95'][1]:.2f}] n={r['n']}",
        flush=True,
    )
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="stereoset-domain")
    ap.add_argument("--students", default="qwen-1.5b,smollm2")
    ap.add_argument("--teacher", default="qwen-1.5b")
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
    a = ap.parse_args()
    for m in [a.teacher, *a.students.split(",")]:
        if m != "smollm2" and m not in MODELS:
            raise SystemExit(f"unknown model {m}; choose smollm2 or {', '.join(MODELS)}")
    out_dir = RESULTS / "quality" / a.dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    res_path = out_dir / "results.json"
    res: dict[str, Any] = json.loads(res_path.read_text()) if res_path.exists() else {}
    res.update(machine=machine(), args=vars(a))
    res.setdefault("students", {})
    cache = Cache(RESULTS / "quality" / "cache.sqlite")
    task, train, val, test = load(a.dataset, a.n_train, a.n_val, a.n_test, a.seed, a.max_chars)
    res.update(
        task=task.name, n_train=len(train), n_val=len(val), n_test=len(test), notes=list(task.notes)
    )

    def save() -> None:
        tmp = res_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        tmp.replace(res_path)

    def evaluate(
        model_spec: str,
        key: str,
        method: str,
        prompt: Prompt | None = None,
        items: list[Example] = test,
        calibrate: bool = True,
    ) -> dict[str, Any]:
        return score(
            model_spec,
            key,
            method,
            task,
            items,
            cache,
            prompt,
            train=train,
            seed=a.seed,
            calibrate=calibrate,
        )

    teacher_spec = spec(a.teacher, a.dataset)
    if "teacher_zero_shot" not in res:
        res["teacher_zero_shot"] = evaluate(teacher_spec, "teacher", "zero-shot")
        save()
    for student in a.students.split(","):
        st = res["students"].setdefault(student, {"methods": {}})
        s_spec = spec(student, a.dataset)
        for m in ("zero-shot", "few-shot"):
            if m not in st["methods"]:
                st["methods"][m] = evaluate(s_spec, student, m)
                save()
        if "cot" not in st["methods"]:
            st["methods"]["cot"] = evaluate(s_spec, student, "cot", items=test[: a.cot_n])
            save()
        run = out_dir / f"run-{student}"
        t0 = time.perf_counter()
        d = Distiller(
            teacher_spec,
            s_spec,
            "local:smollm2",
            cache=cache,
            config=distill_config(a.max_rounds, a.seed),
        )
        d.fit(
            task.with_examples(train),
            task.with_examples(val),
            run_dir=run,
            resume=(run / "run.json").exists(),
            force=not (run / "run.json").exists(),
        )
        st["distill"] = {
            "wall_s_this_process": time.perf_counter() - t0,
            "usage_by_role": d.usage_["by_role"],
            "usage_by_phase": d.usage_["by_phase"],
            "rules": len(d.rules_),
            "extraction_failures": len(d.extraction_failures_),
            "instructions_v0": len(d.instructions_v0_),
            "instructions": len(d.instructions_),
            "rounds": d.rounds_,
        }
        synth = student_prompt(task, d.instructions_v0_)
        if "pld-synth" not in st["methods"]:
            st["methods"]["pld-synth"] = evaluate(s_spec, student, "pld-synth", synth)
            save()
        # ablation: the final rules with the default decision (layout "default", calibrated),
        # then the decision fitted on validation (issue #13), and zero-shot given the same fit
        if "pld-undecided" not in st["methods"]:
            st["methods"]["pld-undecided"] = evaluate(
                s_spec, student, "pld-undecided", student_prompt(task, d.instructions_)
            )
            save()
        rb = Rulebook.load(run)
        if "pld" not in st["methods"]:
            st["methods"]["pld"] = evaluate(
                s_spec, student, "pld", rb.prompt, calibrate=rb.calibrate
            )
            st["methods"]["pld"]["decision"] = rb.decision
            save()
        zs = rb.zero_shot_decision
        if zs is not None and "zero-shot-fitted" not in st["methods"]:
            zp = render_layout(str(zs["layout"]), task, None)
            st["methods"]["zero-shot-fitted"] = evaluate(
                s_spec, student, "zero-shot-fitted", zp, calibrate=bool(zs["calibrate"])
            )
            st["methods"]["zero-shot-fitted"]["decision"] = dict(zs)
            save()
        pld_ok = st["methods"]["pld"]["_correct"]
        for m, r in st["methods"].items():
            if m != "pld":
                r["mcnemar_vs_pld"] = mcnemar_counts(r["_correct"], pld_ok)
        save()
    print("saved", res_path)


if __name__ == "__main__":
    main()
