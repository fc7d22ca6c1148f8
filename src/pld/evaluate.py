"""Evaluation: PLD against the alternatives a user would try, on the same items.

Methods: ``zero-shot`` (task description + labels), ``few-shot`` (k seeded random training
examples as demonstrations), ``cot`` (reason, then a parsed ``Answer: <label>`` line) and
``pld`` (a ``Rulebook``'s saved system prompt and user template, byte for byte). The label-
scoring methods share one decision rule (closed choice, calibrated when enabled), so the
comparison isolates what the prompt contributes.

``compare`` runs several methods on the same items and returns a ``Comparison`` (figures per
method, per-item predictions, and against PLD the paired McNemar test and the paired bootstrap
95% CI of the macro-F1 difference); ``pld eval``, ``pld compare`` and ``pld demo`` all call it
and only render what it returns.

The zero-shot baseline gets the same fitted decision PLD gets (``pld.decide``): the layout and
calibration chosen on validation — the rulebook's own zero-shot decision when one is given
(same validation items as the rulebook's), else fitted on the validation items passed — and
its results record which one, so a comparison never pits a fitted PLD against a defaulted
baseline.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pld._async import gather_all, run_sync
from pld.cache import Cache
from pld.config import DistillConfig
from pld.decide import fit_zero_shot
from pld.errors import ConfigError, RunDirError
from pld.metrics import paired_bootstrap_diff, summary
from pld.models.base import ChatModel, GenOptions, Message
from pld.models.client import Accountant, ChatClient, Limits
from pld.models.registry import redact_spec, resolve_chat
from pld.phases.classify import classify_options, classify_with, parse_label
from pld.phases.layouts import DEFAULT_LAYOUT, LAYOUTS, render_layout
from pld.predictions import Item, Prediction, example_items
from pld.progress import NoProgress, Progress
from pld.prompts import Prompt, student_prompt
from pld.rulebook import Rulebook
from pld.rundir import RunDir
from pld.taskref import DEFAULT_SPLIT, TaskRef
from pld.tasks.base import Example, Task, render_template, stratified_sample

log = logging.getLogger(__name__)

METHODS = ("zero-shot", "few-shot", "cot", "pld")
COT_SUFFIX = (
    "\nThink step by step in at most five sentences, then give the final answer on its own "
    "line as: Answer: <label>"
)
_ANSWER = re.compile(r"answer\s*[:：]\s*(.+)", re.I)


def zero_shot_prompt(task: Task) -> Prompt:
    """The baseline: the task description and labels, no rules."""
    return student_prompt(task)


def few_shot_prompt(task: Task, train: Sequence[Example], k: int, seed: int) -> Prompt:
    """The baseline plus ``k`` seeded random training examples as demonstrations."""
    rng = random.Random(seed)
    pool = sorted(train, key=lambda e: e.id)
    chosen = rng.sample(pool, min(k, len(pool)))
    base = zero_shot_prompt(task)
    return Prompt(base.system, base.user_template, tuple((task.render(e), e.label) for e in chosen))


def parse_cot(text: str, labels: Sequence[str]) -> str | None:
    """The label on the last 'Answer:' line; strict (see ``parse_label``)."""
    found = _ANSWER.findall(text)
    return parse_label(found[-1], labels) if found else None


async def classify_cot(
    items: Sequence[Item],
    prompt: Prompt,
    labels: Sequence[str],
    student: ChatClient,
    *,
    max_tokens: int = 256,
    on_done: Callable[[], None] | None = None,
) -> list[Prediction]:
    """Reason first, then answer. The label is read from a final 'Answer:' line; when there is
    none (small models rarely follow the format), a second, closed-choice call asks for the
    label given the reasoning — so CoT is scored on its reasoning, not on its formatting. Tokens
    and latency of both calls are counted."""
    system = prompt.system.rstrip("\n") + COT_SUFFIX + "\n"
    opts = classify_options(labels)

    async def one(item: Item) -> Prediction:
        msgs = [
            Message("system", system),
            Message("user", render_template(prompt.user_template, item[1])),
        ]
        comp = await student.complete(msgs, GenOptions(max_tokens=max_tokens, temperature=0.0))
        label = parse_cot(comp.text, labels)
        usage, latency, raw = comp.usage, comp.latency_s, comp.text
        if label is None:
            follow = [
                *msgs,
                Message("assistant", comp.text),
                Message(
                    "user",
                    f"So the answer is one of: {', '.join(labels)}. Reply with the label only.",
                ),
            ]
            ans = await student.complete(follow, opts)
            label = parse_label(ans.text, labels)
            usage, latency = usage + ans.usage, latency + ans.latency_s
            raw = f"{comp.text}\n[answer] {ans.text}"
        if on_done:
            on_done()
        return Prediction(
            id=item[0],
            label=label,
            raw=raw,
            confidence=None,
            latency_s=latency,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            cached=comp.cached,
            gold=item[2],
        )

    return await gather_all(one(it) for it in items)


async def run_method(
    method: str,
    task: Task,
    items: Sequence[Example],
    student: ChatClient,
    *,
    train: Sequence[Example] = (),
    rulebook: Rulebook | None = None,
    k: int = 5,
    seed: int = 0,
    calibrate: bool | None = None,
    cot_max_tokens: int = 256,
    on_done: Callable[[], None] | None = None,
    zero_shot: Mapping[str, Any] | None = None,
) -> tuple[Prompt, list[Prediction]]:
    """One method's prompt and its predictions on ``items``. ``calibrate`` None means each
    method's own setting: the rulebook's decision for pld, ``zero_shot``'s (a fitted
    zero-shot decision: layout and calibration) for zero-shot, calibrated otherwise."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    triples = example_items(items)
    if method == "pld":
        if rulebook is None:
            raise ConfigError("method pld needs --prompt RUN_DIR (a finished pld distill run)")
        preds = await rulebook.apredict(triples, student, calibrate=calibrate, on_done=on_done)
        return rulebook.prompt, preds
    if method == "few-shot":
        if not train:
            raise ConfigError("few-shot needs training examples to draw demonstrations from")
        prompt = few_shot_prompt(task, train, k, seed)
    elif method == "zero-shot" and zero_shot is not None:
        prompt = render_layout(str(zero_shot["layout"]), task, None)
        calibrate = bool(zero_shot["calibrate"]) if calibrate is None else calibrate
    else:
        prompt = zero_shot_prompt(task)
    calibrate = True if calibrate is None else calibrate
    if method == "cot":
        return prompt, await classify_cot(
            triples, prompt, task.labels, student, max_tokens=cot_max_tokens, on_done=on_done
        )
    preds = await classify_with(
        prompt, triples, task.labels, student, calibrate=calibrate, on_done=on_done
    )
    return prompt, preds


def mcnemar_counts(a: Mapping[str, bool], b: Mapping[str, bool]) -> dict[str, Any]:
    """Exact (binomial) McNemar test on paired correctness (item id -> correct); only the
    items both sides scored are paired."""
    from scipy.stats import binomtest

    common = [i for i in a if i in b]
    n10 = sum(1 for i in common if a[i] and not b[i])
    n01 = sum(1 for i in common if b[i] and not a[i])
    n = n01 + n10
    pval = 1.0 if n == 0 else float(binomtest(min(n01, n10), n, 0.5).pvalue)
    return {"a_only_correct": n10, "b_only_correct": n01, "p_value": pval}


def mcnemar(a: Sequence[Prediction], b: Sequence[Prediction]) -> dict[str, Any]:
    """McNemar between two methods' predictions on the same items."""
    return mcnemar_counts({p.id: p.correct for p in a}, {p.id: p.correct for p in b})


def method_result(
    method: str,
    prompt: Prompt,
    preds: Sequence[Prediction],
    labels: Sequence[str],
    cost_usd: float,
) -> dict[str, Any]:
    """One method's figures (``summary`` plus prompt size, shots and cost)."""
    s = summary(preds, labels)
    s.update(
        method=method,
        system_prompt_chars=len(prompt.system),
        shots=len(prompt.shots),
        cost_usd=cost_usd,
        cost_per_item_usd=cost_usd / len(preds) if preds else 0.0,
    )
    return s


@dataclass
class Comparison:
    """Methods scored on the same items. ``methods`` holds each method's figures as
    results.json stores them; ``predictions`` the per-item predictions behind them;
    ``calls`` the student calls each method made in this process."""

    task: str
    student: str
    item_ids: list[str]
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    predictions: dict[str, list[Prediction]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """How many items every method was scored on."""
        return len(self.item_ids)

    def to_json(self) -> dict[str, Any]:
        """results.json as pld compare writes it."""
        return {
            "task": self.task,
            "n": self.n,
            "student": redact_spec(self.student),
            "item_ids": self.item_ids,
            "methods": self.methods,
            "notes": self.notes,
        }

    def save(self, out_dir: str | Path) -> Path:
        """results.json and predictions_METHOD.jsonl in ``out_dir`` (overwritten)."""
        rd = RunDir(out_dir, force=True)
        rd.write_json("results.json", self.to_json())
        for m, p in self.predictions.items():
            rd.write_jsonl(f"predictions_{m}.jsonl", [x.to_json() for x in p])
        return rd.file("results.json")

    @classmethod
    def load(cls, path: str | Path) -> Comparison:
        """A saved comparison (results.json; the per-item predictions are not read back)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return cls(d["task"], d["student"], list(d["item_ids"]), d["methods"], d["notes"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunDirError(f"{p} is unreadable ({e}); rerun pld compare to rebuild it") from e


async def acompare(
    methods: Sequence[str],
    task: Task,
    items: Sequence[Example],
    student: str | ChatModel,
    *,
    train: Sequence[Example] = (),
    rulebook: Rulebook | None = None,
    k: int = 5,
    seed: int = 0,
    calibrate: bool | None = None,
    cache: Cache | None = None,
    progress: Progress | None = None,
    val: Sequence[Example] = (),
) -> Comparison:
    """``compare`` for use inside an event loop."""
    model = resolve_chat(student) if isinstance(student, str) else student
    prog = progress or NoProgress()
    out = Comparison(
        task.name,
        student if isinstance(student, str) else model.identity,
        [e.id for e in items],
        notes=list(task.notes),
    )

    def client_for(acct: Accountant) -> ChatClient:
        # One request at a time: the embedded engine has one slot, and queueing would be
        # measured as latency.
        return ChatClient(
            model, role="student", accountant=acct, cache=cache, limits=Limits(max_concurrency=1)
        )

    zs = None
    if "zero-shot" in methods:
        zs = await zero_shot_decision(task, val, client_for(Accountant()), rulebook, seed)
    for m in methods:
        acct = Accountant()
        client = client_for(acct)
        prog.start(m, len(items))
        prompt, preds = await run_method(
            m,
            task,
            items,
            client,
            train=train,
            rulebook=rulebook,
            k=k,
            seed=seed,
            calibrate=calibrate,
            on_done=functools.partial(prog.advance, m),
            zero_shot=zs,
        )
        prog.end(m)
        out.methods[m] = method_result(m, prompt, preds, task.labels, acct.total_cost)
        out.predictions[m] = preds
        out.calls[m] = acct.total_calls
    if zs is not None:
        out.methods["zero-shot"]["decision"] = _as_used(zs, calibrate)
    _paired_vs_pld(out, task.labels, seed)
    return out


def _as_used(zs: Mapping[str, Any], calibrate: bool | None) -> dict[str, Any]:
    """The zero-shot decision as the results record it (an explicit --no-calibrate wins)."""
    used = {k: zs[k] for k in ("layout", "calibrate", "source", "val_macro_f1") if k in zs}
    if calibrate is not None and calibrate != zs["calibrate"]:
        used.update(calibrate=calibrate, note="calibration set by the caller")
    return used


def _paired_vs_pld(out: Comparison, labels: Sequence[str], seed: int) -> None:
    """Each method against PLD on the same items: McNemar p and the paired bootstrap 95% CI
    of its macro-F1 minus PLD's (items resampled jointly, seeded)."""
    if "pld" not in out.predictions:
        return
    ref = out.predictions["pld"]
    for m, p in out.predictions.items():
        if m != "pld":
            out.methods[m]["mcnemar_vs_pld"] = mcnemar(p, ref)
            out.methods[m]["diff_vs_pld"] = paired_bootstrap_diff(p, ref, labels, seed=seed)


async def zero_shot_decision(
    task: Task,
    val: Sequence[Example],
    student: ChatClient,
    rulebook: Rulebook | None,
    seed: int = 0,
) -> dict[str, Any]:
    """The zero-shot layout and calibration to evaluate with: the rulebook's (fitted on its
    validation split) when it has one; else fitted here on ``val`` (one validation pass per
    distinct zero-shot layout, three content-free calls each); else the default."""
    if rulebook is not None and rulebook.zero_shot_decision is not None:
        return {**rulebook.zero_shot_decision, "source": "the rulebook's validation split"}
    if val:
        dec, _ = await fit_zero_shot(
            task,
            val,
            student,
            layouts=LAYOUTS,
            calibrate=True,
            confidence=DistillConfig().decide_confidence,
            seed=seed,
        )
        return {**dec, "source": f"fitted on {len(val)} validation items"}
    return {"layout": DEFAULT_LAYOUT, "calibrate": True, "source": "default (no validation items)"}


def compare(
    methods: Sequence[str],
    task: Task,
    items: Sequence[Example],
    student: str | ChatModel,
    **kw: Any,
) -> Comparison:
    """Score ``methods`` on ``items`` with ``student`` (see ``acompare`` for the options):
    the same items, the same client settings, paired McNemar tests and paired bootstrap CIs
    against ``pld``; ``val`` (validation items) fits the zero-shot decision when the rulebook
    carries none."""
    return run_sync(acompare(methods, task, items, student, **kw))


@dataclass(frozen=True)
class EvalItems:
    """What an evaluation runs on: the task, its test items and the training pool (few-shot
    demonstrations are drawn from it), and the seed used."""

    task: Task
    items: list[Example]
    train: list[Example]
    seed: int
    val: list[Example] = field(default_factory=list)


def evaluation_items(
    args: Mapping[str, Any],
    *,
    split: str | None = None,
    seed: int | None = None,
    n_items: int | None = None,
    rulebook: Rulebook | None = None,
) -> EvalItems:
    """The test items for an evaluation. With a rulebook, the task, split and seed default
    to the run's, and the test split is checked against the ids the run held out (so data
    that changed since the fit is caught rather than silently scored)."""
    run = dict(rulebook.run_info) if rulebook is not None else {}
    cli = run.get("cli", {})
    ref = TaskRef.from_args(
        {
            "task": args.get("task") or cli.get("task"),
            "text_fields": args.get("text_fields") or cli.get("text_fields"),
            "label_field": cli.get("label_field") or args.get("label_field"),
            "description": args.get("description") or cli.get("description"),
        }
    )
    own = split is None and seed is None
    split = split or cli.get("split") or DEFAULT_SPLIT
    if seed is None:
        seed = int(run.get("config", {}).get("seed", 0))
    task, sp = ref.split(split, seed)
    if not sp.test:
        raise ConfigError(f"the split {split} leaves no test items; give a test fraction")
    _check_held_out(sp.test, run, own)
    items = stratified_sample(sp.test, n_items, seed) if n_items else list(sp.test)
    return EvalItems(task, items, list(sp.train), seed, list(sp.val))


def _check_held_out(test: Sequence[Example], run: Mapping[str, Any], own_split: bool) -> None:
    held_out = run.get("test_ids")
    if own_split and held_out is not None and [e.id for e in test] != list(held_out):
        raise ConfigError(
            "the task's test split is not the one this run held out (the data changed since "
            "pld distill?); evaluate the data the run was fitted on, or give --split/--seed "
            "explicitly to score a different split"
        )
    seen = set(run.get("train_ids", ())) | set(run.get("val_ids", ()))
    leaked = [e.id for e in test if e.id in seen]
    if leaked:
        log.warning(
            "%d test items were used to fit this rulebook (e.g. %s): scores are optimistic",
            len(leaked),
            leaked[0],
        )
