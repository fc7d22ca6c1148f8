"""Render the Markdown tables of bench/RESULTS.md from bench/results/*.json, so every figure
in RESULTS.md is a copy of a file a benchmark wrote.

    python -m bench.tables latency|cost|quality|peer
    python -m bench.tables disagreements DATASET-frontier SYSTEM [TERM]   # e.g. dspy-gepa
    python -m bench.tables versus VARIANT-DIR BASE-DIR      # e.g. X-frontier-cues X-frontier
    python -m bench.tables transcripts [qwen-1.5b]   # recorded teacher transcripts; over-long
                                                     # replies recounted with that tokenizer
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.common import RESULTS
from bench.dspy_worker import OPTIMIZERS
from bench.teacher_endpoint import replies_over_max_tokens
from pld.evaluate import mcnemar_counts
from pld.metrics import paired_bootstrap_diff, paired_text
from pld.predictions import Prediction
from pld.tasks.base import Example


def _load(name: str) -> Any:
    return json.loads((RESULTS / f"{name}.json").read_text())


def latency() -> str:
    d = _load("latency")
    m, r = d["machine"], d["rates"]
    out = [
        f"Machine: {m['nproc']} cores, {m['cpu']}; xllamacpp {m['xllamacpp']}; "
        f"{m['date']}; commit {m['git']}.",
        f"Engine rates (measured in the same run): prefill {r['prefill_tok_s']:.0f} tok/s "
        f"on a cold {r['prefill_tokens']}-token prompt, decode {r['decode_tok_s']:.0f} tok/s.",
        "",
        "| config | system prompt tok | p50 ms | p95 ms | prefilled p50 | decoded p50 | "
        "engine ms p50 | wall/engine p50 | floor ms p50 | wall/floor p50 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in d["configs"].items():
        out.append(
            f"| {name} (n={c['n']}) | {c['system_tokens']} | {c['p50_ms']:.0f} | "
            f"{c['p95_ms']:.0f} | {c['prefilled_p50']:.0f} | {c['decoded_p50']:.0f} | "
            f"{c['engine_ms_p50']:.0f} | {c['wall_over_engine_p50']:.2f} | "
            f"{c['floor_ms_p50']:.0f} | {c['wall_over_floor_p50']:.2f} |"
        )
    q = d["ratios"]
    out += [
        "",
        f"- CoT / PLD-1500 at p50: **{q['cot_over_pld1500_p50']:.2f}**",
        f"- PLD-1500 / zero-shot at p50: **{q['pld1500_over_zero_p50']:.2f}**",
    ]
    tp = d["throughput"]
    out.append(
        "- Throughput over {} items (PLD-1500 prompt, prefix warm in every slot): ".format(
            tp[0]["items"]
        )
        + ", ".join(f"{t['slots']} slot(s) {t['items_per_s']:.2f} items/s" for t in tp)
        + f"; ratio **{q['throughput_2slots_over_1']:.2f}**"
    )
    cs = d["cold_start"]
    if all("first_label_s" in cs[k] for k in ("plain", "restore")):
        out.append(
            f"- Cold start (process start to first label, PLD-1500 prompt): "
            f"{cs['plain']['first_label_s']:.2f} s plain; "
            f"{cs['restore']['first_label_s']:.2f} s restoring a saved slot state "
            f"({cs['restore']['cached']} prompt tokens restored); ratio "
            f"**{cs['plain']['first_label_s'] / cs['restore']['first_label_s']:.1f}x**"
        )
    return "\n".join(out)


def cost() -> str:
    d = _load("cost")
    out = [
        "| N train | phase | wall s | teacher calls | teacher prompt tok | "
        "teacher completion tok | student calls | embedder calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        for ph, p in r["phases"].items():
            out.append(
                f"| {r['n']} | {ph} | {p.get('wall_s') or 0:.1f} | "
                f"{p.get('teacher_calls', 0)} | {p.get('teacher_prompt_tokens', 0)} | "
                f"{p.get('teacher_completion_tokens', 0)} | "
                f"{p.get('student_calls', 0)} | {p.get('embedder_calls', 0)} |"
            )
    if "extract_fit" in d:
        f = d["extract_fit"]
        out += [
            "",
            "Extraction cost against N (least squares): "
            + "; ".join(
                f"{k}: slope {v['slope']:.2f}/example, R² {v['r2']:.3f}" for k, v in f.items()
            ),
        ]
    if "cache_effect" in d:
        c = d["cache_effect"]
        out.append(
            f"\nSecond identical run (N={c['n']}, same cache): **{c['model_calls']} model "
            f"calls**, {c['cache_hits']} cache hits, {c['wall_s']:.1f} s."
        )
    if "clustering" in d:
        out += [
            "",
            "| rules | DBSCAN s | process peak RSS MB (before DBSCAN) | "
            "peak traced allocations MB | a dense n×n float64 matrix would be MB | clusters |",
            "|---|---|---|---|---|---|",
        ]
        for c in d["clustering"]:
            out.append(
                f"| {c['n']} | {c['seconds']:.2f} | {c['peak_rss_mb']:.0f} "
                f"({c.get('rss_before_mb', float('nan')):.0f}) | "
                f"{c.get('traced_peak_mb', float('nan')):.0f} | "
                f"{c['dense_matrix_mb']:.0f} | {c['clusters']} |"
            )
    return "\n".join(out)


def _test_items(a: dict[str, Any]) -> list[Example]:
    """The test items, reloaded exactly as the run with these arguments sampled them (results
    files keep each method's answers, not the items)."""
    from bench.quality import load

    _, _, _, test = load(a["dataset"], a["n_train"], a["n_val"], a["n_test"], a["seed"],
                         a.get("max_chars", 1200))  # fmt: skip
    return test


def _gold(d: dict[str, Any]) -> dict[str, str]:
    return {e.id: e.label for e in _test_items(d["args"])}


def _text(e: Example) -> str:
    return " ".join(e.fields.values())


def _preds(r: dict[str, Any], gold: dict[str, str]) -> list[Prediction]:
    items = r["_pred"].items()
    return [Prediction(i, lab, "", None, 0.0, 0, 0, 0, False, gold[i]) for i, lab in items]


def paired_vs_pld(d: dict[str, Any], st: dict[str, Any], labels: list[str]) -> dict[str, str]:
    """Per method: PLD minus the method, macro-F1, with the paired bootstrap 95% CI (items
    resampled jointly: ``pld.metrics.paired_bootstrap_diff``)."""
    ms = st["methods"]
    if "_pred" not in ms.get("pld", {}):  # runs before per-item answers were kept
        return {}
    gold = _gold(d)
    pld = _preds(ms["pld"], gold)
    out = {}
    for m, r in ms.items():
        if m != "pld" and "_pred" in r:
            b = paired_bootstrap_diff(pld, _preds(r, gold), labels)
            out[m] = f"{paired_text(b)} (n={b['n']})"
    return out


def quality() -> str:
    out = []
    for p in sorted((RESULTS / "quality").glob("*/results.json")):
        d = json.loads(p.read_text())
        if not any(st["methods"] for st in d["students"].values()):
            out.append(f"### {d['task']} — teacher replies recorded, no student scored yet\n")
            continue
        out.append(
            f"### {d['task']} — train {d['n_train']}, val {d['n_val']}, test "
            f"{d['n_test']} (teacher {d['args']['teacher']}; {d['machine']['date']})"
        )
        if d.get("notes"):
            out.append("Notes: " + "; ".join(d["notes"]))
        out += [
            "",
            "| student | method | n | macro-F1 | 95% CI | acc | invalid | p50 ms | "
            "prompt tok/item | McNemar p vs PLD | PLD − method, paired 95% CI, permutation p |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        t = d.get("teacher_zero_shot")
        if t:
            out.append(
                f"| teacher {d['args']['teacher']} | zero-shot (ceiling) | {t['n']} | "
                f"{_scores(t)} | "
                f"{t['latency_p50_s'] * 1000:.0f} | {t['prompt_tokens_per_item']:.0f} | - |"
            )
        labels = sorted({lab for st in d["students"].values() for r in st["methods"].values()
                         for lab in r.get("per_class", {})})  # fmt: skip
        for s, st in d["students"].items():
            paired = paired_vs_pld(d, st, labels) if labels else {}
            pld_ok = st["methods"].get("pld", {}).get("_correct")
            for m, r in st["methods"].items():
                mc = r.get("mcnemar_vs_pld")
                if mc is None and pld_ok and m != "pld":  # a run stopped before its last row
                    mc = mcnemar_counts(r["_correct"], pld_ok)
                out.append(
                    f"| {s} | {m} | {r['n']} | {r['macro_f1']:.3f} | "
                    f"[{r['macro_f1_ci95'][0]:.2f}, {r['macro_f1_ci95'][1]:.2f}] | "
                    f"{r['accuracy']:.3f} | {r['invalid']} | "
                    f"{r['latency_p50_s'] * 1000:.0f} | {r['prompt_tokens_per_item']:.0f}"
                    f" | {'-' if not mc else format(mc['p_value'], '.3g')} | "
                    f"{paired.get(m, '-')} |"
                )
            dd = st.get("distill")
            if dd:
                out.append(
                    f"\n{s}: {dd['rules']} rules extracted ({dd['extraction_failures']} "
                    f"failed), {dd['instructions_v0']} synthesized, "
                    f"{dd['instructions']} final; {_teacher_use(d, dd)}.\n"
                )
    return "\n".join(out)


def _teacher_use(d: dict[str, Any], dd: dict[str, Any]) -> str:
    """This process's teacher usage, or, for a run that replayed a recorded frontier teacher
    (zero live calls here), the transcript's counts: "0 calls" would misstate what it cost."""
    u = dd["usage_by_role"].get("teacher", {})
    t = d.get("teacher_transcript")
    if t and not u.get("calls"):
        return (
            f"teacher replayed from its transcript ({t['requests']} requests, "
            f"{t['answers']} replies, {len(t['quoting_test_items'])} quoting a test item"
            f"{_over_limit(t)})"
        )
    return (
        f"teacher {u.get('calls', 0)} calls ({u.get('cache_hits', 0)} cache hits), "
        f"{u.get('prompt_tokens', 0)} + {u.get('completion_tokens', 0)} tokens"
    )


def _u(usage: dict[str, Any], role: str) -> tuple[int, int, int]:
    u = usage.get(role, {})
    prompt = int(u.get("prompt_tokens", 0))
    # calls that used no tokens at all were cache replays (see bench/dspy_worker.py)
    calls = int(u.get("calls", 0)) if prompt else 0
    return calls, prompt, int(u.get("completion_tokens", 0))


def search_parts(c: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A compile's processes, split into the search that finished (the last process that
    started with an empty DSPy cache and every later one: each continued from the cache the
    one before left) and the void ones before it, whose calls that search could not replay
    (their cache stayed on another machine, before ``dspy/cache.jsonl``). Paid for and
    shown, but not the optimizer's cost. GEPA resumes from its own committed checkpoint (its
    record counts the teacher calls of all its processes), so none of its processes is void."""
    if not c:  # no compile: dspy.Predict
        return [], []
    parts = [*c.get("earlier_attempts", []), c]
    if "teacher_calls_all_processes" in c:
        return parts, []
    fresh = [i for i, x in enumerate(parts) if x.get("cache_entries_at_start") == 0]
    start = fresh[-1] if fresh else 0
    return parts[start:], parts[:start]


def _build_cost(r: dict[str, Any]) -> tuple[int, int, int, int, float]:
    """An optimizer's teacher calls, prompt and completion tokens, student calls and wall,
    including the attempts that died and were resumed from the cache."""
    parts = search_parts(r.get("compile", {}))[0]
    tc, tp, tk = (sum(_u(x["usage"], "teacher")[i] for x in parts) for i in range(3))
    sc = sum(_u(x["usage"], "student")[0] for x in parts)
    return tc, tp, tk, sc, sum(x["wall_s"] for x in parts)


def _failed(r: dict[str, Any], role: str) -> str:
    """The model calls of ``role`` that raised (timeouts, server errors) in a row's search and
    test pass, as text for its calls cell: DSPy goes on after them, so they are shown, not
    hidden in a score (``bench.dspy_worker.FailedCalls``)."""
    spans = [*search_parts(r.get("compile", {}))[0], r]
    n = sum(int(x.get("usage", {}).get(role, {}).get("failed_calls", 0)) for x in spans)
    return f" ({n} failed)" if n else ""


def _unrecorded(compile_info: dict[str, Any]) -> int:
    """Earlier processes of a search that left no usage (killed before the worker recorded
    MIPROv2's usage live): their share of every cost is missing from the row."""
    return sum(1 for a in search_parts(compile_info)[0] if not a.get("usage"))


def _attempt_line(att: dict[str, Any], methods: dict[str, Any]) -> str:
    """One optimizer process that ended before its optimizer returned: paused on request (a
    search longer than a sitting) or died. Its calls count toward the optimizer's cost, which
    its row shows once a rerun has finished it; until then the line gives them itself."""
    err = att["error"].splitlines()[0]
    opt = att.get("optimizer")
    ended = "was paused" if err.startswith("paused") else "failed"
    if opt is None or opt in methods:  # records without the name predate unfinished arms
        fate = "and was resumed (its calls are counted above)"
    else:
        tc, sc = _u(att["usage"], "teacher")[0], _u(att["usage"], "student")[0]
        fate = f"(no row yet: its {tc} teacher and {sc} student calls count when it finishes)"
    return f"\nA {opt or 'DSPy'} attempt {ended} after {att['wall_s']:.0f} s {fate}: {err}"


VOID = (
    "a later process started the search again from an empty DSPy cache (a fresh machine, "
    "before dspy/cache.jsonl kept the cache), so none of its calls were replayed"
)


def _lost_line(att: dict[str, Any]) -> str:
    """An attempt whose search state is gone (see ``bench.peer.carried_over``): paid for, and
    shown, but outside the search that replaced it, so no row counts its calls."""
    tc, sc = _u(att["usage"], "teacher")[0], _u(att["usage"], "student")[0]
    calls = f"{tc} teacher and {sc} student calls" if att["usage"] else "calls not recorded"
    return (
        f"\nA {att.get('optimizer', 'DSPy')} attempt of {att['wall_s']:.0f} s ({calls}, "
        f"not counted in any row) is void: {att['lost']}."
    )


def _scores(r: dict[str, Any]) -> str:
    """The cells every quality row shares: macro-F1, its CI, accuracy and invalid answers."""
    lo, hi = r["macro_f1_ci95"]
    return f"{r['macro_f1']:.3f} | [{lo:.2f}, {hi:.2f}] | {r['accuracy']:.3f} | {r['invalid']}"


def _paired(r: dict[str, Any], pld: list[Prediction] | None, gold: dict[str, str] | None) -> str:
    """pld minus the row: recomputed from both sides' recorded answers when the test items
    can be reloaded (so records saved before the permutation p existed get it too), else as
    the record has it."""
    if pld is None or gold is None:
        return paired_text(r["pld_minus_this"])
    return paired_text(paired_bootstrap_diff(pld, _preds(r, gold), list(r["per_class"])))


def _test_p50(r: dict[str, Any]) -> str:
    """The test pass's median latency, or why there is none: a pass that replayed DSPy's cache
    for some items timed the cache, not the student."""
    served = _u(r.get("usage", {}), "student")[0]
    if served < r["n"]:
        return f"- ({r['n'] - served} of {r['n']} replayed)"
    return f"{r['latency_p50_s'] * 1000:.0f}"


def per_class_f1(pld: dict[str, Any], others: dict[str, Any]) -> list[str]:
    """Per-class F1 of pld and each other system on the same items, with the items only one of
    them got right: where a system wins says more about why than its macro-F1 does."""
    if "per_class" not in pld:  # records written before per-class scores were kept
        return []
    labels = list(pld["per_class"])
    others = {m: r for m, r in others.items() if "per_class" in r}
    out = [
        "",
        "| system | " + " | ".join(f"F1 {lab}" for lab in labels) + " | right only here | "
        "right only in pld |",
        "|---|" + "---|" * (len(labels) + 2),
        "| pld | "
        + " | ".join(f"{pld['per_class'][lab]['f1']:.2f}" for lab in labels)
        + " | - | - |",
    ]
    for m, r in others.items():
        mc = r["mcnemar_vs_pld"]
        out.append(
            f"| {m} | "
            + " | ".join(f"{r['per_class'][lab]['f1']:.2f}" for lab in labels)
            + f" | {mc['a_only_correct']} | {mc['b_only_correct']} |"  # a = m, b = pld
        )
    return out


def _over_limit(transcript: dict[str, Any]) -> str:
    """ ", N longer than max_tokens" for a transcript checked since that check exists."""
    long = transcript.get("replies_over_max_tokens")
    return "" if long is None else f", {len(long)} longer than their max_tokens (est.)"


def peer_frontier(name: str, d: dict[str, Any]) -> list[str]:
    """DSPy given pld's frontier teacher: every row against the frontier run's pld."""
    f, q = d["pld_frontier"], d["quality_args"]
    tr = d["dspy_teacher_transcript"]
    out = [
        f"### {name} — student {d['args']['model']}, frontier teacher (pld and DSPy alike); "
        f"train {q['n_train']}, val {q['n_val']}, test {q['n_test']}; DSPy {d['dspy']}; "
        f"{d['machine']['date']}",
        "",
        "| system | n | macro-F1 | 95% CI | acc | invalid | McNemar p vs pld | "
        "pld − system, paired 95% CI, permutation p | teacher calls | "
        "teacher tok est. (prompt + completion) | student calls to build | build wall s | "
        "test p50 ms/item |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    su = f["distill_usage"].get("student", {})
    t = f["teacher"]
    # a real run's record names its dataset, so its test items (the gold labels) reload
    gold = _gold({"args": q}) if "dataset" in q else None
    pld = _preds(f, gold) if gold is not None else None
    out.append(
        f"| pld (frontier run's rulebook) | {f['n']} | {f['macro_f1']:.3f} | "
        f"[{f['macro_f1_ci95'][0]:.2f}, {f['macro_f1_ci95'][1]:.2f}] | {f['accuracy']:.3f} | "
        f"{f['invalid']} | - | - | {t['requests']} | {t['prompt_tokens_est']} + "
        f"{t['completion_tokens_est']} | {su.get('calls', 0)} (+{su.get('cache_hits', 0)} "
        f"cached) | - | {f['latency_p50_s'] * 1000:.0f} |"
    )
    for m, r in d["quality_baselines"].items():
        out.append(
            f"| {m} | {r['n']} | {_scores(r)} | "
            f"{r['mcnemar_vs_pld']['p_value']:.3g} | {_paired(r, pld, gold)} | - | - | - | - | "
            f"{r['latency_p50_s'] * 1000:.0f} |"
        )
    for m, r in d["methods"].items():
        tc, tp, tk, sc, wall = _build_cost(r)
        more = " + unrecorded" if _unrecorded(r.get("compile", {})) else ""
        out.append(
            f"| {m} | {r['n']} | {_scores(r)} | "
            f"{r['mcnemar_vs_pld']['p_value']:.3g} | {_paired(r, pld, gold)} | "
            f"{tc}{more}{_failed(r, 'teacher')} | {tp} + {tk}{more} | "
            f"{sc}{more}{_failed(r, 'student')} | {wall:.0f}{more} | {_test_p50(r)} |"
        )
    out += per_class_f1(f, d["quality_baselines"] | d["methods"])
    leaks = len(tr["quoting_test_items"])
    out.append(
        f"\nDSPy's teacher transcript: {tr['cost']['requests']} distinct requests, "
        f"{tr['answers']} answers, {leaks} quoting a test item{_over_limit(tr)}; "
        f"pld's: {t['requests']}. "
        "Teacher tokens are the endpoint's estimate (characters / 4) on both sides."
    )
    g = d["methods"].get("dspy-gepa", {}).get("compile")
    if g:
        out.append(
            f"\nGEPA stopped by its {g['stopped_by']} after {g['teacher_calls_all_processes']} "
            f"teacher calls (budget {g['teacher_call_budget']}), {g['metric_calls']} student "
            f"rollouts, {g['candidates']} candidates."
        )
    void = [
        {**att, "optimizer": m, "lost": VOID}
        for m, r in d["methods"].items()
        if not m.endswith("-lenient")  # the same compile as the row it rereads
        for att in search_parts(r.get("compile", {}))[1]
    ]
    ids = {(a["optimizer"], a.get("started_utc"), a["wall_s"]) for a in void}
    out += [
        _attempt_line(att, d["methods"])
        for att in d.get("failed_attempts", [])
        if (att.get("optimizer"), att.get("started_utc"), att["wall_s"]) not in ids
    ]
    out += [_lost_line(att) for att in [*d.get("lost_attempts", []), *void]]
    mb = d["methods"].get("dspy-miprov2-budget", {}).get("compile")
    if mb:
        tu = mb["usage"].get("teacher", {})
        # the finishing process asks every request of the search, new or from DSPy's cache;
        # the new ones may have been asked by an earlier process of the same search
        used = tu.get("calls", 0) + tu.get("cache_hits", 0)
        new = _build_cost(d["methods"]["dspy-miprov2-budget"])[0]
        n_blind = _unrecorded(mb)
        if new > used:  # an earlier process asked for proposals the finishing one did not
            how = (
                f"{new} asked by its processes on record, {new - used} of them for proposals "
                "the process that finished did not make again: counted in the row, not used"
            )
        else:
            how = (
                f"{new} asked by its processes on record, {used - new} replayed from DSPy's "
                "cache: requests made before, e.g. by the `light` run, with the same seed"
                + (
                    f", or by {n_blind} killed process(es) whose calls were not recorded (a "
                    "process started before the worker recorded MIPROv2's usage live)"
                    if n_blind
                    else ""
                )
            )
        out.append(
            f"\nMIPROv2 at pld's budget: {mb['num_candidates']} instruction candidates and "
            f"{mb['num_trials']} trials for a budget of {mb['teacher_call_budget']} teacher "
            f"calls; it used {used} teacher replies ({how})."
        )
    for m in OPTIMIZERS:
        ins = d["methods"].get(m, {}).get("instructions")
        if ins:
            out.append(f"\n{m}'s instruction, verbatim: {json.dumps(ins)}")
    return out


def peer() -> str:
    out = []
    for p in sorted((RESULTS / "quality").glob("*/peer-dspy.json")):
        d = json.loads(p.read_text())
        if "pld_frontier" in d:
            out += peer_frontier(p.parent.name, d)
            continue
        f = d["pld_fresh"]
        out += [
            f"### {p.parent.name} — model {d['args']['model']} as teacher and student; "
            f"DSPy {d['dspy']}; {d['machine']['date']}",
            "",
            "| system | macro-F1 | 95% CI | acc | invalid | McNemar p vs pld | teacher calls "
            "| teacher tok (prompt + completion) | student calls to build | build wall s "
            "| test p50 ms/item | test prompt tok/item | test completion tok/item |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        tc, tp, tk = _u(f["distill_usage"], "teacher")
        sc = _u(f["distill_usage"], "student")[0]
        out.append(
            f"| pld (own empty cache) | {_scores(f)} | "
            f"- | {tc} | "
            f"{tp} + {tk} | {sc} | {f['distill_wall_s_this_process']:.0f}"
            f"{' (resumed)' if f['distill_resumed'] else ''} | "
            f"{f['latency_p50_s'] * 1000:.0f} | {f['prompt_tokens_per_item']:.0f} | "
            f"{f['completion_tokens_per_item']:.1f} |"
        )
        for name, r in d["methods"].items():
            tc, tp, tk, sc, wall = _build_cost(r)
            n = r["n"]
            _, sp, sk = _u(r["usage"], "student")
            mc = r["mcnemar_vs_pld_fresh"]
            out.append(
                f"| {name} | {_scores(r)} | "
                f"{mc['p_value']:.3g} | {tc} | {tp} + {tk} | {sc} | {wall:.0f} | "
                f"{r['latency_p50_s'] * 1000:.0f} | {sp / n:.0f} | {sk / n:.1f} |"
            )
        out += [_attempt_line(att, d["methods"]) for att in d.get("failed_attempts", [])]
        ab = d.get("calibration_ablation")
        if ab:
            out += [
                "",
                "Same student, pld's decision rule with and without contextual calibration:",
                "",
                "| pld prompt, decision | macro-F1 | 95% CI | acc | McNemar p vs pld |",
                "|---|---|---|---|---|",
            ]
            for k, r in ab.items():
                mc = mcnemar_counts(r["_correct"], f["_correct"])
                out.append(
                    f"| {k} | {r['macro_f1']:.3f} | [{r['macro_f1_ci95'][0]:.2f}, "
                    f"{r['macro_f1_ci95'][1]:.2f}] | {r['accuracy']:.3f} | "
                    f"{mc['p_value']:.3g} |"
                )
        mi = d["methods"].get("dspy-miprov2", {}).get("instructions")
        if mi:
            out.append(f"\nMIPROv2's instruction, verbatim: {json.dumps(mi)}")
    return "\n".join(out)


def disagreements(dataset_dir: str, system: str, term: str | None = None) -> str:
    """The test items exactly one of pld and ``system`` got right, with both answers and the
    input, then the counts by (gold, loser's answer): the per-item evidence behind a paired
    difference, for reading why one side wins (``peer-dspy.json`` of a frontier run). With
    ``term``, also how each side does on the test items whose input contains it."""
    from collections import Counter

    d = json.loads((RESULTS / "quality" / dataset_dir / "peer-dspy.json").read_text())
    test = _test_items(d["quality_args"])
    others = d["quality_baselines"] | d["methods"]
    pld, other = d["pld_frontier"]["_pred"], others[system]["_pred"]
    out = []
    for winner, loser, lp in (("pld", system, other), (system, "pld", pld)):
        rows = [e for e in test if (pld[e.id] == e.label) == (winner == "pld")
                and (other[e.id] == e.label) == (winner != "pld")]  # fmt: skip
        out += ["", f"#### right only in {winner} ({len(rows)} items): gold, {loser}'s answer",
                ""]  # fmt: skip
        for e in rows:
            text = _text(e).replace("|", "/")[:110]
            out.append(f"- {e.label} ← {lp[e.id]}: {text}")
        counts = Counter((e.label, lp[e.id]) for e in rows)
        out += ["", ", ".join(f"{g} → {a}: {n}" for (g, a), n in counts.most_common())]
    if term:
        hit = [e for e in test if term.lower() in _text(e).lower()]
        out += ["", f"test items containing {term!r}: {len(hit)}; right in pld "
                f"{sum(pld[e.id] == e.label for e in hit)}, in {system} "
                f"{sum(other[e.id] == e.label for e in hit)}"]  # fmt: skip
    return "\n".join(out)


def versus(variant_dir: str, base_dir: str) -> str:
    """A variant run's pld (e.g. ``--name-cues``, same split and student) against every row of
    the base run and of its DSPy comparison, paired on the same test items: the variant has
    no baselines of its own, so its comparisons are made here, from the recorded answers."""
    q = RESULTS / "quality"
    var = json.loads((q / variant_dir / "results.json").read_text())
    base = json.loads((q / base_dir / "results.json").read_text())
    for k in ("dataset", "n_train", "n_val", "n_test", "seed"):
        if var["args"][k] != base["args"][k]:
            raise SystemExit(f"{variant_dir} and {base_dir} differ in {k}: not the same items")
    gold = _gold(base)
    peer = q / base_dir / "peer-dspy.json"
    peer_d = json.loads(peer.read_text()) if peer.exists() else {}
    out: list[str] = []
    for s, st in base["students"].items():
        if s not in var["students"]:
            continue
        rows = {f"{m} ({base_dir})": r for m, r in st["methods"].items() if "_pred" in r}
        if peer_d and peer_d["args"]["model"] == s:  # DSPy ran with this student
            rows |= peer_d["methods"]
        mine = var["students"][s]["methods"]["pld"]
        me = _preds(mine, gold)
        labels = sorted(mine["per_class"])
        out += [
            f"### {variant_dir}: pld (student {s}, macro-F1 {mine['macro_f1']:.3f}, "
            f"n={mine['n']}) against {base_dir} on the same items",
            "",
            "| system | n | macro-F1 | variant pld − system, paired 95% CI, permutation p | "
            "McNemar p |",
            "|---|---|---|---|---|",
        ]
        for m, r in rows.items():
            b = paired_bootstrap_diff(me, _preds(r, gold), labels)
            mc = mcnemar_counts(mine["_correct"], r["_correct"])
            out.append(
                f"| {m} | {r['n']} | {r['macro_f1']:.3f} | {paired_text(b)} | {mc['p_value']:.3g} |"
            )
    return "\n".join(out)


def transcripts(tokenizer: str | None = None) -> str:
    """Every recorded frontier-teacher transcript (pld's and DSPy's): its requests, replies
    and the replies longer than their request's max_tokens, which an API would have cut.
    The endpoint's estimate is characters / 4; ``tokenizer`` (a bench model, e.g. qwen-1.5b)
    recounts the flagged replies with a real BPE vocabulary, since the frontier teacher's own
    tokenizer is not available here and chars / 4 overstates English prose."""
    count = _token_counter(tokenizer) if tokenizer else None
    recount = f" ({tokenizer} tokens)" if tokenizer else ""
    out = [
        "| transcript | requests | replies | longer than max_tokens, est. "
        f"(key: limit → chars/4{' → ' + tokenizer if tokenizer else ''}) | over{recount} |",
        "|---|---|---|---|---|",
    ]
    for root in sorted((RESULTS / "quality").glob("*/*teacher")):
        if not (root / "requests").is_dir():
            continue
        n_req = len(list((root / "requests").glob("*.json")))
        n_ans = len(list((root / "answers").glob("*.txt")))
        long = replies_over_max_tokens(root)
        real = (
            {k: count((root / "answers" / f"{k}.txt").read_text()) for k in long} if count else {}
        )
        listed = ", ".join(
            f"{k[:8]}: {a} → {b}" + (f" → {real[k]}" if k in real else "")
            for k, (a, b) in long.items()
        )
        over = sum(real[k] > a for k, (a, _) in long.items()) if count else "-"
        out.append(
            f"| {root.parent.name}/{root.name} | {n_req} | {n_ans} | {len(long)}"
            f"{' (' + listed + ')' if listed else ''} | {over} |"
        )
    return "\n".join(out)


def _token_counter(name: str) -> Any:
    from bench.models import fetch
    from pld.models.local import EngineConfig, get_engine

    engine = get_engine(EngineConfig(path=str(fetch(name)), n_ctx=2048, n_threads=1))
    return lambda text: len(engine.tokenize(text))


if __name__ == "__main__":
    if sys.argv[1] == "disagreements":
        print(disagreements(*sys.argv[2:5]))
    elif sys.argv[1] == "transcripts":
        print(transcripts(*sys.argv[2:3]))
    elif sys.argv[1] == "versus":
        print(versus(sys.argv[2], sys.argv[3]))
    else:
        print({"latency": latency, "cost": cost, "quality": quality, "peer": peer}[sys.argv[1]]())
