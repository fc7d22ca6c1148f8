"""Build ``RUN_DIR/report/index.html`` (self-contained) and ``report.md`` from a run's
artifacts: nothing is recomputed here that the JSON does not hold, so every figure on the page
traces back to a file in the run directory. The run is read through ``Rulebook.load``, the
method comparison (when ``pld compare`` saved one) through ``Comparison.load`` and the rule
audit (when ``pld audit`` wrote one) through ``load_audit``."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pld.audit import load_audit, prompt_digest
from pld.evaluate import Comparison
from pld.lint import findings_of
from pld.metrics import paired_text
from pld.rulebook import Rulebook

SVG_BAR_W = 260
SVG_ROW_H = 20


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plots(
    run: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]], results: dict[str, Any] | None
) -> dict[str, tuple[str, bytes]]:
    """Every plot the run's files support, as (caption, PNG bytes) by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, tuple[str, bytes]] = {}
    if results and results.get("methods"):
        _method_plots(plt, results, out)
    _round_plot(plt, rounds, out)
    _cost_plot(plt, run, out)
    return out


def _method_plots(plt: Any, results: dict[str, Any], out: dict[str, tuple[str, bytes]]) -> None:

    ms = list(results["methods"])
    r = results["methods"]
    f1 = [r[m]["macro_f1"] for m in ms]
    lo = [r[m]["macro_f1"] - r[m]["macro_f1_ci95"][0] for m in ms]
    hi = [r[m]["macro_f1_ci95"][1] - r[m]["macro_f1"] for m in ms]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(ms, f1, yerr=[lo, hi], capsize=4, color="#4C72B0")
    ax.set_ylabel("macro-F1 (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title(f"macro-F1 per method, n={results['n']}")
    out["f1_by_method"] = ("macro-F1 per method with bootstrap 95% CIs", _png(fig))

    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = range(len(ms))
    ax.bar([i - 0.2 for i in x], [r[m]["latency_p50_s"] * 1000 for m in ms], 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [r[m]["latency_p95_s"] * 1000 for m in ms], 0.4, label="p95")
    ax.set_xticks(list(x), ms)
    ax.set_ylabel("ms per item")
    ax.legend()
    ax.set_title("student latency per method")
    out["latency_by_method"] = ("latency per item (p50, p95)", _png(fig))

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(ms, [r[m]["prompt_tokens_per_item"] for m in ms], color="#55A868")
    ax.set_ylabel("prompt tokens per item")
    ax.set_title("prompt size")
    out["prompt_tokens"] = ("prompt size in tokens per item", _png(fig))

    for m in ms:
        conf = r[m]["confusion"]
        gold = list(conf)
        cols = list(next(iter(conf.values())).keys()) if conf else []
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(cols), 1.0 + 0.7 * len(gold)))
        mat = [[conf[g][c] for c in cols] for g in gold]
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_yticks(range(len(gold)), gold)
        top = max((v for row in mat for v in row), default=0)
        for i, row in enumerate(mat):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    color="white" if v > top / 2 else "black",
                )
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"confusion: {m}")
        out[f"confusion_{m}"] = (f"confusion matrix, {m}", _png(fig))


def _round_plot(
    plt: Any, rounds: Sequence[Mapping[str, Any]], out: dict[str, tuple[str, bytes]]
) -> None:
    scored = [x for x in rounds if "val_macro_f1" in x]
    if scored:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(
            [x["round"] for x in scored],
            [x["val_macro_f1"] for x in scored],
            "o-",
            color="#999",
            label="candidate",
        )
        acc = [x for x in scored if x.get("accepted")]
        ax.plot(
            [x["round"] for x in acc],
            [x["val_macro_f1"] for x in acc],
            "o",
            color="#C44E52",
            label="accepted",
        )
        ax.set_xlabel("resolve round")
        ax.set_ylabel("validation macro-F1")
        ax.set_ylim(0, 1)
        # whole rounds only, and a readable axis even when only round 0 exists
        last = max(int(x["round"]) for x in scored)
        ax.set_xlim(-0.5, max(last, 1) + 0.5)
        ax.set_xticks(range(max(last, 1) + 1))
        ax.legend()
        ax.set_title("conflict resolution")
        out["f1_by_round"] = ("validation macro-F1 per resolve round", _png(fig))


def _cost_plot(plt: Any, run: Mapping[str, Any], out: dict[str, tuple[str, bytes]]) -> None:
    phases = run.get("usage_by_phase") or {}
    if phases:
        names = [p for p in phases if p != "-"]
        roles = sorted({r for p in names for r in phases[p]})
        fig, ax = plt.subplots(figsize=(6, 3.2))
        bottom = [0.0] * len(names)
        for role in roles:
            vals = [
                float(
                    phases[p].get(role, {}).get("prompt_tokens", 0)
                    + phases[p].get(role, {}).get("completion_tokens", 0)
                )
                for p in names
            ]
            ax.bar(names, vals, bottom=bottom, label=role)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_ylabel("tokens")
        ax.legend()
        cost = sum(r.get("cost_usd", 0.0) for p in names for r in phases[p].values())
        ax.set_title(f"cost per phase (tokens; ${cost:.4f} in all)")
        out["cost_by_phase"] = ("tokens and cost per phase", _png(fig))


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _no_evaluation(rb: Rulebook, run_dir: Path) -> str:
    """The note shown instead of the method comparison, with the command that adds it."""
    student = (rb.run_info.get("cli") or {}).get("student") or "STUDENT_SPEC"
    return (
        "No evaluation yet: this run has not been scored on its test split. Add the method "
        f"comparison with <code>pld compare --prompt {html.escape(str(run_dir))} --student "
        f"{html.escape(student)}</code>, then run <code>pld report</code> again."
    )


def _results_html(results: dict[str, Any] | None, rb: Rulebook, root: Path) -> list[str]:
    """The method comparison table, or the note saying how to add one."""
    e = html.escape
    parts: list[str] = []
    if results:
        parts.append(
            f"<h2>Methods on {results['n']} test items</h2><table id='results'><tr>"
            "<th>method</th><th>macro-F1</th><th>95% CI</th><th>accuracy</th>"
            "<th>invalid</th><th>p50 ms</th><th>prompt tokens/item</th>"
            "<th>McNemar p vs PLD</th>"
            "<th>Δ macro-F1 vs PLD [paired 95% CI], permutation p</th></tr>"
        )
        for m, r in results["methods"].items():
            mc = r.get("mcnemar_vs_pld")
            dv = r.get("diff_vs_pld")
            dcell = paired_text(dv, digits=3) if dv else "-"
            parts.append(
                f"<tr><td>{e(m)}</td>"
                f"<td data-metric='{e(m)}.macro_f1'>{r['macro_f1']:.3f}</td>"
                f"<td>[{r['macro_f1_ci95'][0]:.3f}, {r['macro_f1_ci95'][1]:.3f}]</td>"
                f"<td data-metric='{e(m)}.accuracy'>{r['accuracy']:.3f}</td>"
                f"<td data-metric='{e(m)}.invalid'>{r['invalid']}</td>"
                f"<td>{r['latency_p50_s'] * 1000:.0f}</td>"
                f"<td>{r['prompt_tokens_per_item']:.0f}</td>"
                f"<td>{'-' if not mc else format(mc['p_value'], '.3g')}</td>"
                f"<td>{dcell}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append(f"<h2>Methods</h2><p id='no-evaluation'>{_no_evaluation(rb, root)}</p>")
    return parts


def _decision_html(rb: Rulebook) -> list[str]:
    """The fitted decision: what the student is asked with, why, and each candidate's
    validation score (the harm guard's sentence is shown at the top of the page)."""
    e = html.escape
    d = rb.decision
    if not d:
        return []
    used = d.get("used") or d
    parts = []
    parts.append(
        "<h2>Decision (fitted on validation)</h2><p id='decision'>The student is asked with "
        f"layout <code>{e(str(used['layout']))}</code>, "
        f"{'calibrated' if used['calibrate'] else 'raw'} scores: {e(str(d.get('reason', '')))}"
        "</p><table id='decision-candidates'><tr><th>prompt</th><th>layout</th>"
        "<th>calibrated</th><th>val macro-F1</th><th>Δ vs default</th></tr>"
    )
    for who, rec in (("rulebook", d), ("zero-shot", d.get("zero_shot") or {})):
        for c in rec.get("candidates", []):
            parts.append(
                f"<tr><td>{who}</td><td>{e(str(c['layout']))}</td><td>{c['calibrate']}</td>"
                f"<td>{c['val_macro_f1']:.3f}</td><td>{c['diff_vs_default']:+.3f}</td></tr>"
            )
    parts.append("</table>")
    return parts


def _lint_html(rb: Rulebook, run_dir: Path) -> list[str]:
    """The rulebook lint's findings (lint.json): code, rule, message; or how to lint a run
    saved before the lint existed."""
    e = html.escape
    if rb.lint is None:
        return [
            "<h2>Lint</h2><p id='no-lint'>This run has no lint.json (it predates the rulebook "
            f"lint); see the findings with <code>pld lint {e(str(run_dir))}</code>.</p>"
        ]
    found = findings_of(rb.lint)
    size = (
        f"prompt {e(str(rb.lint.get('prompt_tokens')))} tokens "
        f"({e(str(rb.lint.get('counted_with')))}), budget {e(str(rb.lint.get('budget_tokens')))}"
    )
    if not found:
        return [f"<h2>Lint</h2><p id='lint'>No findings ({size}).</p>"]
    parts = [
        f"<h2>Lint: {len(found)} warning(s)</h2><p>Review these before signing the rulebook "
        f"off ({size}).</p><table id='lint'><tr><th>code</th><th>rule</th><th>finding</th></tr>"
    ]
    for f in found:
        rule = f"<a href='#rule-{e(f.rule_id)}'>{e(f.rule_id)}</a>" if f.rule_id else "-"
        parts.append(
            f"<tr data-code='{e(f.code)}'><td>{e(f.code)}</td><td>{rule}</td>"
            f"<td>{e(f.message)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _rounds_html(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """One table row per resolve round."""
    e = html.escape
    parts: list[str] = []
    if rounds:
        parts.append(
            "<h2>Resolve rounds</h2><table id='rounds'><tr><th>round</th>"
            "<th>val macro-F1</th><th>accepted</th><th>note / diagnosis</th></tr>"
        )
        for r in rounds:
            vf = r.get("val_macro_f1")
            parts.append(
                f"<tr><td>{r['round']}</td><td>{'-' if vf is None else f'{vf:.3f}'}"
                f"</td><td>{r.get('accepted')}</td>"
                f"<td>{e(str(r.get('note') or r.get('diagnosis') or ''))[:400]}</td></tr>"
            )
        parts.append("</table>")
    return parts


def _rulebook_html(
    ins: Sequence[Mapping[str, Any]], examples: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """Each rule with what it decides, the training examples it came from and its edits."""
    e = html.escape
    parts: list[str] = []
    parts.append(f"<h2 id='rulebook'>Rulebook ({len(ins)} rules)</h2>")
    for i in ins:
        parts.append(
            f"<div class='rule' id='rule-{e(i['id'])}'><h3>{e(i['id'])}. "
            f"{e(i['topic'])}</h3><p>{e(i['text'])}</p>"
        )
        if i.get("labels"):
            parts.append(f"<p><b>Decides:</b> {e(', '.join(i['labels']))}</p>")
        if i.get("sources"):
            parts.append(
                f"<details><summary>Formed from {len(i['sources'])} training examples</summary><ul>"
            )
            for sid in i["sources"]:
                ex = examples.get(sid)
                body = f"{e(ex['input'])} <i>({e(ex['label'])})</i>" if ex else ""
                parts.append(f"<li><code>{e(sid)}</code> {body}</li>")
            parts.append("</ul></details>")
        for h in i.get("history", []):
            parts.append(f"<p class='edit'><b>Edit:</b> {e(h)}</p>")
        parts.append("</div>")
    return parts


def _delta_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """Δ macro-F1 per rule as an inline SVG bar plot (no script, no image file): bars to the
    right of the zero line help, to the left hurt."""
    e = html.escape
    scale = max([abs(float(r["delta_macro_f1"])) for r in rows] + [0.05])
    label_w, half = 60, SVG_BAR_W // 2
    height = SVG_ROW_H * len(rows) + 24
    zero = label_w + half
    out = [
        f"<svg id='audit-plot' xmlns='http://www.w3.org/2000/svg' "
        f"width='{label_w + SVG_BAR_W + 70}' height='{height}' role='img' "
        "aria-label='Δ macro-F1 per rule'>",
        f"<line x1='{zero}' y1='0' x2='{zero}' y2='{height - 20}' stroke='#333'/>",
    ]
    for k, r in enumerate(rows):
        d = float(r["delta_macro_f1"])
        w = abs(d) / scale * half
        x = zero if d >= 0 else zero - w
        y = k * SVG_ROW_H + 2
        color = "#4C72B0" if d >= 0 else "#C44E52"
        out.append(
            f"<text x='{label_w - 6}' y='{y + 13}' text-anchor='end' font-size='12'>"
            f"{e(str(r['id']))}</text><rect x='{x:.1f}' y='{y}' width='{w:.1f}' "
            f"height='{SVG_ROW_H - 6}' fill='{color}'><title>{e(str(r['id']))}: "
            f"{d:+.3f}</title></rect><text x='{label_w + SVG_BAR_W + 4}' y='{y + 13}' "
            f"font-size='12'>{d:+.3f}</text>"
        )
    out.append(
        f"<text x='{zero}' y='{height - 4}' text-anchor='middle' font-size='11'>"
        "Δ macro-F1 (with − without the rule)</text></svg>"
    )
    return "".join(out)


def _audit_rows_html(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    e = html.escape
    parts = [
        "<table id='audit'><tr><th>rule</th><th>decides</th><th>cited</th><th>fixed</th>"
        "<th>broken</th><th>macro-F1 without</th><th>Δ macro-F1 [paired 95% CI]</th>"
        "<th>McNemar p</th><th>source examples / edits</th><th>flags</th></tr>"
    ]
    for r in rows:
        rid = e(str(r["id"]))
        lo, hi = r["delta_ci95"]
        flags = ["removal candidate"] if r["removal_candidate"] else []
        flags += [str(f) for f in r["flags"]]
        flags += [f"names {x}" for x in r.get("names_other_labels", [])]
        prov = r["provenance"]
        parts.append(
            f"<tr id='audit-{rid}'><td><a href='#rule-{rid}'>{rid}</a></td>"
            f"<td>{e(', '.join(r['labels']) or '-')}</td>"
            f"<td data-metric='audit.{rid}.cited'>{r['cited']}</td>"
            f"<td data-metric='audit.{rid}.fixed'>{len(r['fixed'])}</td>"
            f"<td data-metric='audit.{rid}.broken'>{len(r['broken'])}</td>"
            f"<td>{r['macro_f1_without']:.3f}</td>"
            f"<td><span data-metric='audit.{rid}.delta'>{r['delta_macro_f1']:+.3f}</span> "
            f"[{lo:+.3f}, {hi:+.3f}]</td><td>{r['mcnemar_p']:.3g}</td>"
            f"<td>{prov['n_sources']} / {len(prov['history'])}</td>"
            f"<td>{e('; '.join(flags))}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _audit_html(audit: Mapping[str, Any] | None, rb: Rulebook) -> list[str]:
    """The rule audit (``pld audit``): the Δ macro-F1 plot, the per-rule table and the
    flagged overlaps, label mentions and lint findings."""
    if not audit:
        return []
    e = html.escape
    full = audit["full"]
    parts = [
        f"<h2 id='audit-section'>Rule audit: leave-one-rule-out on {audit['n_val']} validation "
        f"items</h2><p>macro-F1 with every rule {full['macro_f1']:.3f}. For each rule: the items "
        "it fixes (right with it, wrong without) and breaks, macro-F1 without it, Δ = with − "
        "without (paired bootstrap 95% CI), the exact McNemar p of fixed vs broken, and how "
        "often the student cites it.</p>"
    ]
    if audit.get("prompt_sha256") != prompt_digest(rb):
        parts.append(
            "<p id='audit-stale'><b>Stale:</b> this audit scored another prompt than the "
            "rulebook's current one; rerun <code>pld audit</code>.</p>"
        )
    parts.append(_delta_svg(audit["rules"]))
    parts += _audit_rows_html(audit["rules"])
    items = []
    for c in audit["conflicts"]:
        kinds = ", ".join(sorted({str(ev["kind"]) for ev in c["evidence"]}))
        a, b = (e(str(x)) for x in c["rules"])
        items.append(f"<li>{a} and {b} overlap while naming different labels ({kinds})</li>")
    for m in audit["label_mentions"]:
        items.append(f"<li>{e(m['rule'])} names {e(', '.join(m['names']))} in its text</li>")
    for f in audit.get("lint", []):
        items.append(f"<li>lint {e(str(f.get('code')))}: {e(str(f.get('message')))}</li>")
    if items:
        parts.append("<ul id='audit-flags'>" + "".join(items) + "</ul>")
    return parts


def _markdown(
    name: str,
    results: dict[str, Any] | None,
    n_rules: int,
    plots: Mapping[str, tuple[str, bytes]],
    rb: Rulebook,
    root: Path,
    audit: Mapping[str, Any] | None = None,
) -> list[str]:
    """report.md: the comparison (or how to add it), the rulebook's size, the rule audit and
    the plots."""
    md = [f"# pld report — {name}", ""]
    if rb.warning:
        md += [f"**Warning:** {rb.warning}", ""]
    if results:
        md += ["| method | macro-F1 | 95% CI | accuracy | invalid |", "|---|---|---|---|---|"]
        for m, r in results["methods"].items():
            md.append(
                f"| {m} | {r['macro_f1']:.3f} | [{r['macro_f1_ci95'][0]:.3f}, "
                f"{r['macro_f1_ci95'][1]:.3f}] | {r['accuracy']:.3f} | {r['invalid']} |"
            )
        md.append("")
    else:
        note = _no_evaluation(rb, root).replace("<code>", "`").replace("</code>", "`")
        md += [html.unescape(note), ""]
    found = findings_of(rb.lint)
    if found:
        md += [f"**Lint:** {len(found)} warning(s)", ""]
        md += [f"- {f.code} {f.rule_id or '-'}: {f.message}" for f in found] + [""]
    md += [f"Rulebook: {n_rules} rules (see `../prompt.md`).", ""]
    if audit:
        md += [
            f"Rule audit on {audit['n_val']} validation items (Δ = macro-F1 with − without):",
            "",
            "| rule | cited | fixed | broken | Δ macro-F1 | McNemar p | flags |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in audit["rules"]:
            md.append(
                f"| {r['id']} | {r['cited']} | {len(r['fixed'])} | {len(r['broken'])} | "
                f"{r['delta_macro_f1']:+.3f} | {r['mcnemar_p']:.3g} | {', '.join(r['flags'])} |"
            )
        md.append("")
    md += [f"![{cap}]({name}.png)" for name, (cap, _) in plots.items()]
    return md


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write index.html, report.md and the PNG plots; return the HTML page's path."""
    rb = Rulebook.load(run_dir)
    root = Path(run_dir)
    run = rb.run_info
    ins = rb.instructions.to_json()["instructions"]
    rounds = rb.rounds
    examples = {k: {"id": k, **v} for k, v in rb.sources.items()}
    saved = root / "eval" / "results.json"
    results = Comparison.load(saved).to_json() if saved.exists() else None
    audit = load_audit(root)
    plots = _plots(run, rounds, results)
    out = Path(out_dir) if out_dir else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name, (_, png) in plots.items():
        (out / f"{name}.png").write_bytes(png)

    e = html.escape
    task = run.get("task", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>pld report — {e(task.get('name', ''))}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}.rule{border-left:4px solid #4C72B0;padding-left:1em;margin:1em 0}"
        "details{margin:.3em 0}</style></head><body>",
        f"<h1>pld report — {e(task.get('name', ''))}</h1>",
        f"<p>{e(task.get('description', ''))}</p>",
        "<p>Models: "
        + ", ".join(f"{e(k)} <code>{e(v)}</code>" for k, v in run.get("models", {}).items())
        + "</p>",
    ]
    if rb.warning:
        parts.append(f"<p id='harm-guard'><b>Warning:</b> {e(rb.warning)}</p>")
    parts += _lint_html(rb, root)
    parts += _results_html(results, rb, root)
    parts.append("<h2>Plots</h2>")
    for name, (caption, png) in plots.items():
        b64 = base64.b64encode(png).decode()
        parts.append(
            f"<figure><img class='plot' id='plot-{e(name)}' alt='{e(caption)}' "
            f"src='data:image/png;base64,{b64}'><figcaption>{e(caption)}"
            "</figcaption></figure>"
        )
    parts += _audit_html(audit, rb)
    parts += _decision_html(rb) + _rounds_html(rounds) + _rulebook_html(ins, examples)
    # Lets a headless browser (and the tests) confirm every plot decoded and rendered.
    parts.append(
        "<script>window.addEventListener('load',()=>{const i=[...document."
        "querySelectorAll('img.plot')];document.body.dataset.plotsLoaded=i.filter("
        "x=>x.complete&&x.naturalWidth>0).length;document.body.dataset.plots=i.length;"
        "});</script>"
    )
    parts.append("</body></html>")
    (out / "index.html").write_text("\n".join(parts), encoding="utf-8")

    md = _markdown(task.get("name", ""), results, len(ins), plots, rb, root, audit)
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return out / "index.html"
