"""The ``pld`` command. Thin: parses flags, calls the library, prints results. Any PLDError
becomes one clear line on stderr and exit status 2."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pld import __version__
from pld.cache import Cache, default_cache_path
from pld.config import DistillConfig
from pld.errors import ConfigError, PLDError
from pld.models.base import GenOptions, Message
from pld.models.client import Accountant, ChatClient, Limits
from pld.models.registry import SPEC_HELP, redact_spec, redact_specs, resolve_chat
from pld.tasks.base import Example, Task, stratified_sample, stratified_split
from pld.tasks.files import load_records, load_task

out = Console()
err = Console(stderr=True)


class RichProgress:
    """Distiller progress hook: one bar per phase."""

    def __init__(self, console: Console) -> None:
        self._p = Progress(
            TextColumn("[bold]{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._ids: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._p.start()
        return self

    def __exit__(self, *a: object) -> None:
        self._p.stop()

    def start(self, phase: str, total: int | None) -> None:
        self._ids[phase] = self._p.add_task(phase, total=total)

    def advance(self, phase: str, n: int = 1) -> None:
        if phase in self._ids:
            self._p.advance(self._ids[phase], n)

    def end(self, phase: str) -> None:
        if phase in self._ids:
            t = self._p.tasks[self._ids[phase]]
            self._p.update(self._ids[phase], total=t.completed)


def _fail(e: BaseException) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    sys.exit(2)


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except PLDError as e:
        _fail(e)
    except KeyboardInterrupt:
        err.print("interrupted: finished calls are cached; rerun with --resume to continue")
        sys.exit(130)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pld")
@click.option("-v", "--verbose", is_flag=True, help="Log what each phase decides.")
def main(verbose: bool) -> None:
    """Prompt-Level Distillation: turn a strong teacher LLM's reasoning into an auditable
    rulebook that a small student LLM follows zero-shot.

    \b
    Model specs:  local:smollm2 · local:/path/model.gguf?ctx=8192&slots=2
                  openai:gpt-4.1-mini · openai:NAME@http://127.0.0.1:8000/v1?dialect=llamacpp
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- models ----------------------------------------------------------------------------------
@main.group()
def models() -> None:
    """Inspect and test model backends."""


@models.command("check")
@click.argument("spec")
@click.option("--prompt", default="Name three primary colours.", show_default=True)
@click.option("--max-tokens", default=24, show_default=True)
def models_check(spec: str, prompt: str, max_tokens: int) -> None:
    """Send one tiny request to SPEC; print the answer, latency and token counts."""

    def go() -> None:
        client = ChatClient(resolve_chat(spec), role="check", limits=Limits(max_retries=1))
        comp = asyncio.run(
            client.complete([Message("user", prompt)], GenOptions(max_tokens=max_tokens))
        )
        out.print(f"model:      {client.identity}")
        out.print(f"answer:     {comp.text.strip()!r}")
        out.print(f"finish:     {comp.finish_reason}")
        out.print(f"latency:    {comp.latency_s * 1000:.0f} ms")
        out.print(
            f"tokens:     prompt {comp.usage.prompt_tokens} (cached "
            f"{comp.usage.cached_prompt_tokens}), completion {comp.usage.completion_tokens}"
        )

    _run(go)


# -- distill ---------------------------------------------------------------------------------
def _parse_split(s: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in s.split(","))
    except ValueError as e:
        raise ConfigError(f"--split takes three fractions like 0.5,0.25,0.25, got {s!r}") from e
    if len(parts) != 3:
        raise ConfigError(f"--split takes three fractions like 0.5,0.25,0.25, got {s!r}")
    return parts[0], parts[1], parts[2]


def _cache(path: str | None, no_cache: bool) -> Cache | None:
    if no_cache:
        return None
    return Cache(path or default_cache_path())


def _summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    return t


def _usage_rows(usage: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    rows = []
    for role, s in usage.items():
        rows.append(
            (
                role,
                f"{s['calls']} calls ({s['cache_hits']} cache hits, {s['failures']} failed, "
                f"{s['retries']} retried), {s['prompt_tokens']} prompt + "
                f"{s['completion_tokens']} completion tokens, ${s['cost_usd']:.4f}",
            )
        )
    return rows


@main.command()
@click.option(
    "--task",
    "task_ref",
    help="demo, a task .toml/.yaml, a .jsonl/.csv file, or "
    "stereoset@PATH?..., contract-nli@PATH?..., logiqa@PATH.",
)
@click.option(
    "--text-field",
    "text_fields",
    multiple=True,
    help="Input field(s) of a .jsonl/.csv task (repeatable) [default: text].",
)
@click.option("--label-field", default=None, help="Label field of a .jsonl/.csv task.")
@click.option("--description", default=None, help="Task description for a data file.")
@click.option("--teacher", help="Teacher model spec.")
@click.option("--student", help="Student model spec.")
@click.option("--embedder", default=None, help="Embedder spec [default: local:smollm2].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="New run directory.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    help="Continue the interrupted run in this directory (no finished call repeats).",
)
@click.option("--force", is_flag=True, help="Overwrite a non-empty --out directory.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="TOML file with DistillConfig settings.",
)
@click.option(
    "--split",
    "split_s",
    default="0.5,0.25,0.25",
    show_default=True,
    help="train,val,test fractions (seeded, stratified).",
)
@click.option("--seed", type=int, default=None)
@click.option("--max-train", type=int, default=None, help="Use at most N training examples.")
@click.option("--max-rounds", type=int, default=None, help="Resolve rounds (0 skips phase 3).")
@click.option("--max-calls", type=int, default=None, help="Hard cap on model calls.")
@click.option("--max-cost", type=float, default=None, help="Hard cap on cost in USD.")
@click.option("--eps", type=float, default=None, help="DBSCAN eps (cosine distance).")
@click.option("--min-samples", type=int, default=None, help="DBSCAN min_samples.")
@click.option("--cache", "cache_path", default=None, help="Cache database path.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the cache.")
def distill(**kw: Any) -> None:
    """Distill TASK's training split into a rulebook for the student."""
    _run(lambda: _distill(**kw))


def _distill(
    task_ref: str | None,
    text_fields: tuple[str, ...],
    label_field: str | None,
    description: str | None,
    teacher: str | None,
    student: str | None,
    embedder: str | None,
    out_dir: str | None,
    resume_dir: str | None,
    force: bool,
    config_path: str | None,
    split_s: str,
    seed: int | None,
    max_train: int | None,
    max_rounds: int | None,
    max_calls: int | None,
    max_cost: float | None,
    eps: float | None,
    min_samples: int | None,
    cache_path: str | None,
    no_cache: bool,
) -> None:
    from pld.distiller import Distiller

    if out_dir and resume_dir:
        raise ConfigError("give either --out (new run) or --resume (existing run), not both")
    if resume_dir and force:
        raise ConfigError("--resume and --force contradict each other; choose one")
    run_dir = resume_dir or out_dir
    if not run_dir:
        raise ConfigError("say where the run goes: --out DIR (or --resume DIR)")
    cli_args: dict[str, Any] = {
        "task": task_ref,
        "teacher": teacher,
        "student": student,
        "embedder": embedder,
        "split": split_s,
        "text_fields": list(text_fields) or None,
        "label_field": label_field,
        "description": description,
    }
    cfg = DistillConfig.from_toml(config_path) if config_path else DistillConfig()
    if resume_dir:
        from pld.rundir import RunDir

        prev = RunDir(resume_dir, resume=True).read_json("run.json")
        saved = prev.get("cli", {})
        for k, v in saved.items():
            if cli_args.get(k) is None or (k == "split" and v):
                cli_args[k] = v
        if prev.get("config"):
            cfg = DistillConfig.from_dict(prev["config"])
    cfg = cfg.with_overrides(
        seed=seed,
        max_train=max_train,
        max_rounds=max_rounds,
        max_calls=max_calls,
        max_cost_usd=max_cost,
        eps=eps,
        min_samples=min_samples,
    )
    for k in ("task", "teacher", "student"):
        if not cli_args[k]:
            raise ConfigError(
                f"--{k} is required ({SPEC_HELP})"
                if k != "task"
                else "--task is required (demo, or a task .toml file)"
            )
    task = load_task(
        str(cli_args["task"]),
        description=cli_args["description"],
        text_fields=tuple(cli_args["text_fields"] or ("text",)),
        label_field=str(cli_args["label_field"] or "label"),
    )
    sp = stratified_split(
        task.examples, fractions=_parse_split(str(cli_args["split"])), seed=cfg.seed
    )
    t0 = time.perf_counter()
    with RichProgress(err) as prog:
        d = Distiller(
            teacher=str(cli_args["teacher"]),
            student=str(cli_args["student"]),
            embedder=str(cli_args["embedder"] or "local:smollm2"),
            config=cfg,
            cache=_cache(cache_path, no_cache),
            use_cache=not no_cache,
            progress=prog,
        )
        d.fit(
            task.with_examples(sp.train),
            task.with_examples(sp.val),
            run_dir=run_dir,
            resume=bool(resume_dir),
            force=force,
            meta={"cli": redact_specs(cli_args), "test_ids": [e.id for e in sp.test]},
        )
    wall = time.perf_counter() - t0
    r0 = d.rounds_[0]["val_macro_f1"] if d.rounds_ else float("nan")
    best = max((r.get("val_macro_f1", 0.0) for r in d.rounds_ if r.get("accepted")), default=r0)
    rows = [
        ("run directory", str(Path(run_dir).resolve())),
        ("rulebook", str((Path(run_dir) / "prompt.md").resolve())),
        (
            "rules",
            f"{len(d.rules_)} extracted, {len(d.extraction_failures_)} failed; "
            f"{len(d.instructions_v0_)} synthesized, {len(d.instructions_)} final",
        ),
        ("val macro-F1", f"{r0:.3f} after synthesis -> {best:.3f} after resolve"),
        *_usage_rows(d.usage_["by_role"]),
        ("wall time", f"{wall:.1f} s"),
    ]
    out.print(_summary_table("pld distill", rows))


# -- predict ---------------------------------------------------------------------------------
@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("inputs", type=click.Path(dir_okay=False, exists=True))
@click.option("--student", required=True, help="Student model spec.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Predictions JSONL [default: stdout].",
)
@click.option("--cache", "cache_path", default=None)
@click.option("--no-cache", is_flag=True)
def predict(
    run_dir: str,
    inputs: str,
    student: str,
    out_path: str | None,
    cache_path: str | None,
    no_cache: bool,
) -> None:
    """Classify INPUTS (JSONL with the task's fields) with the rulebook in RUN_DIR, sending
    exactly the saved system_prompt.txt and user_template.txt."""
    _run(lambda: _predict(run_dir, inputs, student, out_path, cache_path, no_cache))


def _predict(
    run_dir: str,
    inputs: str,
    student: str,
    out_path: str | None,
    cache_path: str | None,
    no_cache: bool,
) -> None:
    from pld.distiller import Distiller
    from pld.rundir import atomic_write
    from pld.tasks.base import template_fields

    d = Distiller.load(
        run_dir, student=student, cache=_cache(cache_path, no_cache), use_cache=not no_cache
    )
    fields = template_fields(d.user_template_)
    recs = load_records(inputs, text_fields=fields, labels=d.task_.labels, require_label=False)
    preds = d.predict([Example(r.id, r.fields, r.label) for r in recs])
    lines = "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in preds)
    if out_path:
        atomic_write(Path(out_path), lines)
        scored = [p for p in preds if p.gold]
        msg = f"wrote {len(preds)} predictions to {out_path}"
        if scored:
            from pld.metrics import summary

            s = summary(scored, d.task_.labels, ci=False)
            msg += (
                f"; macro-F1 {s['macro_f1']:.3f} on {len(scored)} labeled, {s['invalid']} invalid"
            )
        out.print(msg)
    else:
        sys.stdout.write(lines)


# -- eval / compare --------------------------------------------------------------------------
def _task_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--task", "task_ref", default=None, help="Task reference (see pld distill)."),
        click.option(
            "--text-field",
            "text_fields",
            multiple=True,
            help="Input field(s) of a .jsonl/.csv task (repeatable) [default: text].",
        ),
        click.option("--label-field", default="label", show_default=True),
        click.option("--description", default=None, help="Task description for a data file."),
        click.option(
            "--split",
            "split_s",
            default=None,
            help="train,val,test fractions [default: the run's, else 0.5,0.25,0.25].",
        ),
        click.option("--seed", type=int, default=None),
        click.option(
            "--n",
            "n_items",
            type=int,
            default=None,
            help="Evaluate at most N test items (seeded, label-stratified).",
        ),
        click.option("--student", required=True, help="Student model spec."),
        click.option(
            "--prompt",
            "prompt_dir",
            type=click.Path(file_okay=False, exists=True),
            default=None,
            help="A finished pld distill run (for method pld).",
        ),
        click.option("--k", default=5, show_default=True, help="Few-shot demonstrations."),
        click.option("--no-calibrate", is_flag=True, help="Use raw label distributions."),
        click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Write results.json and per-item predictions here.",
        ),
        click.option("--cache", "cache_path", default=None),
        click.option("--no-cache", is_flag=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _eval_items(
    task_ref: str | None,
    text_fields: tuple[str, ...],
    label_field: str,
    description: str | None,
    split_s: str | None,
    seed: int | None,
    n_items: int | None,
    prompt_dir: str | None,
) -> tuple[Task, list[Example], list[Example]]:
    run: dict[str, Any] = {}
    if prompt_dir:
        from pld.rundir import RunDir

        run = RunDir(prompt_dir, resume=True).read_json("run.json")
    cli = run.get("cli", {})
    task_ref = task_ref or cli.get("task")
    if not task_ref:
        raise ConfigError("--task is required")
    split_s = split_s or cli.get("split") or "0.5,0.25,0.25"
    if seed is None:
        seed = int(run.get("config", {}).get("seed", 0))
    task = load_task(
        task_ref,
        description=description or cli.get("description"),
        text_fields=text_fields or tuple(cli.get("text_fields") or ("text",)),
        label_field=cli.get("label_field") or label_field,
    )
    sp = stratified_split(task.examples, fractions=_parse_split(split_s), seed=seed)
    if not sp.test:
        raise ConfigError(f"the split {split_s} leaves no test items; give a test fraction")
    items = stratified_sample(sp.test, n_items, seed) if n_items else list(sp.test)
    return task, items, list(sp.train)


def _evaluate(
    methods: list[str],
    task_ref: str | None,
    text_fields: tuple[str, ...],
    label_field: str,
    description: str | None,
    split_s: str | None,
    seed: int | None,
    n_items: int | None,
    student: str,
    prompt_dir: str | None,
    k: int,
    no_calibrate: bool,
    out_dir: str | None,
    cache_path: str | None,
    no_cache: bool,
) -> dict[str, Any]:
    from pld.evaluate import mcnemar, method_result, run_method
    from pld.rundir import RunDir

    task, items, train = _eval_items(
        task_ref, text_fields, label_field, description, split_s, seed, n_items, prompt_dir
    )
    cache = _cache(cache_path, no_cache)
    results: dict[str, Any] = {
        "task": task.name,
        "n": len(items),
        "student": redact_spec(student),
        "item_ids": [e.id for e in items],
        "methods": {},
        "notes": list(task.notes),
    }
    preds_by: dict[str, list[Any]] = {}
    model = resolve_chat(student)
    for m in methods:
        acct = Accountant()
        client = ChatClient(
            model, role="student", accountant=acct, cache=cache, limits=Limits(max_concurrency=1)
        )
        with RichProgress(err) as prog:
            prog.start(m, len(items))
            prompt, preds = asyncio.run(
                run_method(
                    m,
                    task,
                    items,
                    client,
                    train=train,
                    run_dir=prompt_dir,
                    k=k,
                    seed=seed or 0,
                    calibrate=not no_calibrate,
                    on_done=functools.partial(prog.advance, m),
                )
            )
        results["methods"][m] = method_result(m, prompt, preds, task.labels, acct.total_cost)
        preds_by[m] = preds
    if "pld" in preds_by:
        for m, p in preds_by.items():
            if m != "pld":
                results["methods"][m]["mcnemar_vs_pld"] = mcnemar(p, preds_by["pld"])
    table = Table(
        title=f"{task.name}: {len(items)} test items, student {redact_spec(student)}",
        title_justify="left",
    )
    for col in (
        "method",
        "macro-F1",
        "95% CI",
        "acc",
        "inv",
        "p50 ms",
        "p95 ms",
        "in tok",
        "out tok",
        "$",
        "McNemar p",
    ):
        table.add_column(col, justify="right" if col != "method" else "left")
    for m, r in results["methods"].items():
        lo, hi = r["macro_f1_ci95"]
        mc = r.get("mcnemar_vs_pld")
        table.add_row(
            m,
            f"{r['macro_f1']:.3f}",
            f"[{lo:.2f}, {hi:.2f}]",
            f"{r['accuracy']:.3f}",
            str(r["invalid"]),
            f"{r['latency_p50_s'] * 1000:.0f}",
            f"{r['latency_p95_s'] * 1000:.0f}",
            f"{r['prompt_tokens_per_item']:.0f}",
            f"{r['completion_tokens_per_item']:.1f}",
            f"{r['cost_usd']:.4f}",
            f"{mc['p_value']:.3g}" if mc else "-",
        )
    out.print(table)
    for m, r in results["methods"].items():
        pc = "  ".join(
            f"{lab}: P {v['precision']:.2f} R {v['recall']:.2f} F1 {v['f1']:.2f}"
            for lab, v in r["per_class"].items()
        )
        out.print(f"[bold]{m}[/] per class — {pc}")
        conf = "; ".join(
            f"{g} -> " + ", ".join(f"{p}:{c}" for p, c in row.items() if c)
            for g, row in r["confusion"].items()
        )
        out.print(f"  confusion (gold -> predicted:count): {conf}")
    if out_dir:
        rd = RunDir(out_dir, force=True)
        rd.write_json("results.json", results)
        for m, p in preds_by.items():
            rd.write_jsonl(f"predictions_{m}.jsonl", [x.to_json() for x in p])
        out.print(f"results written to {Path(out_dir) / 'results.json'}")
    return results


@main.command("eval")
@click.option("--method", type=click.Choice(["zero-shot", "few-shot", "cot", "pld"]), required=True)
@_task_options
def eval_cmd(method: str, **kw: Any) -> None:
    """Score one method on the task's test items: macro-F1 with a bootstrap 95% CI, accuracy,
    per-class P/R/F1, confusion, invalid outputs, latency p50/p95, tokens and cost per item."""
    _run(lambda: _evaluate([method], **kw))


@main.command()
@click.option(
    "--methods",
    default=None,
    help="Comma-separated [default: zero-shot,few-shot,cot and pld with --prompt].",
)
@_task_options
def compare(methods: str | None, **kw: Any) -> None:
    """Run several methods on the same items; adds paired McNemar tests against PLD. With
    --prompt, results go to RUN_DIR/eval unless --out says otherwise."""
    ms = (
        methods.split(",")
        if methods
        else ["zero-shot", "few-shot", "cot"] + (["pld"] if kw.get("prompt_dir") else [])
    )
    if kw.get("prompt_dir") and not kw.get("out_dir"):
        kw["out_dir"] = str(Path(kw["prompt_dir"]) / "eval")
    _run(lambda: _evaluate([m.strip() for m in ms if m.strip()], **kw))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write [default: RUN_DIR/report].",
)
def report(run_dir: str, out_dir: str | None) -> None:
    """Write a self-contained HTML page and a Markdown summary for RUN_DIR (plus PNG plots).
    Run `pld compare --prompt RUN_DIR ...` first to include the method comparison."""

    def go() -> None:
        from pld.report import build_report

        path = build_report(run_dir, out_dir)
        out.print(f"report written to {path}")

    _run(go)


# -- serve ---------------------------------------------------------------------------------
@main.command()
@click.option("--model", default="smollm2", show_default=True, help="smollm2 or a .gguf path.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--ctx", default=8192, show_default=True)
@click.option("--slots", default=1, show_default=True)
def serve(model: str, host: str, port: int, ctx: int, slots: int) -> None:
    """Serve a GGUF over an OpenAI-compatible HTTP API (chat + embeddings)."""
    from pld.serve import main as serve_main

    _run(
        lambda: serve_main(
            [
                "--model",
                model,
                "--host",
                host,
                "--port",
                str(port),
                "--ctx",
                str(ctx),
                "--slots",
                str(slots),
            ]
        )
    )


# -- demo ------------------------------------------------------------------------------------
@main.command()
@click.option("--out", "out_dir", default=".pld-demo/run", show_default=True)
@click.option("--teacher", default="local:smollm2", show_default=True)
@click.option("--student", default="local:smollm2", show_default=True)
@click.option("--max-rounds", default=2, show_default=True)
def demo(out_dir: str, teacher: str, student: str, max_rounds: int) -> None:
    """Distill the built-in support-ticket task offline and report before/after on test."""
    _run(lambda: _demo(out_dir, teacher, student, max_rounds))


def _demo(out_dir: str, teacher: str, student: str, max_rounds: int) -> None:
    from pld.distiller import Distiller
    from pld.metrics import summary
    from pld.phases.classify import Prediction, classify
    from pld.phases.resolve import system_prompt_for

    t_start = time.perf_counter()
    task = load_task("demo")
    sp = stratified_split(task.examples, fractions=(0.4, 0.3, 0.3), seed=0)
    out.print(
        f"[bold]pld demo[/] — task {task.name!r}: {len(task.examples)} tickets, labels "
        f"{', '.join(task.labels)}; split {len(sp.train)}/{len(sp.val)}/{len(sp.test)}; "
        f"teacher {redact_spec(teacher)}, student {redact_spec(student)} (all offline)"
    )
    cache = Cache(Path(out_dir).parent / "cache.sqlite")
    cfg = DistillConfig(
        max_rounds=max_rounds,
        patience=1,
        resolve_train_sample=24,
        resolve_failures=6,
        resolve_successes=4,
        extract_max_tokens=200,
        consolidate_max_tokens=200,
        resolve_max_tokens=400,
        teacher_concurrency=2,
        student_concurrency=1,
    )
    acct = Accountant()
    # One request at a time: the embedded engine has one slot, and queueing would be
    # measured as latency.
    base_client = ChatClient(
        resolve_chat(student),
        role="student",
        accountant=acct,
        cache=cache,
        limits=Limits(max_concurrency=1),
    )
    test_items = [(e.id, e.fields, e.label) for e in sp.test]

    async def zero_shot(calibrate: bool) -> list[Prediction]:
        return await classify(
            test_items,
            system_prompt=system_prompt_for(task, None),
            user_template=task.input_template,
            labels=task.labels,
            student=base_client,
            calibrate=calibrate,
        )

    raw = asyncio.run(zero_shot(False))
    before = asyncio.run(zero_shot(True))
    with RichProgress(err) as prog:
        d = Distiller(
            teacher=teacher,
            student=student,
            embedder="local:smollm2",
            config=cfg,
            cache=cache,
            progress=prog,
        )
        d.fit(task.with_examples(sp.train), task.with_examples(sp.val), run_dir=out_dir, force=True)
    after = d.predict(list(sp.test))
    sr, sb, sa = (summary(p, task.labels) for p in (raw, before, after))

    def f1(s: dict[str, Any]) -> str:
        lo, hi = s["macro_f1_ci95"]
        return f"{s['macro_f1']:.3f} [{lo:.2f}, {hi:.2f}]"

    by_role = d.usage_["by_role"]
    calls = sum(s["calls"] for s in by_role.values()) + acct.total_calls
    hits = sum(s["cache_hits"] for s in by_role.values())
    toks = sum(s["prompt_tokens"] + s["completion_tokens"] for s in by_role.values())
    rows = [
        (
            "test macro-F1 [95% CI]",
            f"zero-shot {f1(sr)}; zero-shot calibrated {f1(sb)}; PLD {f1(sa)}",
        ),
        (
            "test accuracy",
            f"zero-shot {sr['accuracy']:.3f}; calibrated {sb['accuracy']:.3f}; "
            f"PLD {sa['accuracy']:.3f} (n={sa['n']}, invalid {sa['invalid']})",
        ),
        (
            "student p50 latency",
            f"zero-shot {sb['latency_p50_s'] * 1000:.0f} ms; "
            f"PLD {sa['latency_p50_s'] * 1000:.0f} ms per item",
        ),
        ("rulebook", str((Path(out_dir) / "prompt.md").resolve())),
        (
            "rules",
            f"{len(d.rules_)} extracted ({len(d.extraction_failures_)} failed), "
            f"{len(d.instructions_v0_)} synthesized, {len(d.instructions_)} final",
        ),
        ("model calls", f"{calls} ({hits} more answered from the cache)"),
        *_usage_rows(by_role),
        ("distillation tokens", f"{toks}"),
        ("wall time", f"{time.perf_counter() - t_start:.1f} s"),
    ]
    out.print(_summary_table("pld demo — held-out test split", rows))


if __name__ == "__main__":  # pragma: no cover
    main()
