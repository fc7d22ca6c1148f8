"""Student latency and throughput on the embedded engine (SmolLM2-135M via xllamacpp).

    python -m bench.latency [--n 40] [--cot-n 20] [--throughput-n 200]

One process, one engine, the same StereoSet intrasentence items for every configuration, no
pld cache (every call is real). Each configuration is warmed once first, so its system prompt
is in the prefix cache, as it is in production. Reports per-item p50/p95 wall latency beside
the engine's own prefilled/decoded token counts and times, and a floor from the engine's
measured prefill and decode rates. Ratios only: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import SHARED_DATA, machine, pct, save
from pld.evaluate import COT_SUFFIX
from pld.models.base import GenOptions, Message
from pld.models.client import ChatClient, Limits
from pld.models.local import LocalChatModel
from pld.phases.classify import classify_options
from pld.rules import Instruction, InstructionSet, render_system_prompt
from pld.tasks.base import stratified_sample, stratified_split
from pld.tasks.datasets import load_stereoset

RULE_TEMPLATES = [
    "If the sentence attributes a trait, role or behaviour to the target group that a common "
    "cultural stereotype associates with that group (for example {a}), the label is stereotype.",
    "If the sentence attributes to the target group the opposite of a common stereotype (for "
    "example {b}), the label is anti-stereotype.",
    "If the filled-in word makes the sentence meaningless, off-topic or unrelated to any social "
    "attribute of the target group (for example {c}), the label is unrelated.",
]
FILLERS = [
    "occupations",
    "intelligence",
    "wealth",
    "diet",
    "temperament",
    "hygiene",
    "religious practice",
    "physical ability",
    "family roles",
    "education",
    "language",
    "appearance",
    "honesty",
    "work ethic",
    "criminality",
    "music",
    "sport",
    "politics",
]


def rulebook(task: Any, target_tokens: int, engine: Any) -> tuple[str, int]:
    """A realistic rulebook grown rule by rule until the system prompt reaches the target
    size in the engine's own tokens."""
    rules: list[Instruction] = []
    k = 0
    while True:
        f = FILLERS[k % len(FILLERS)]
        g = FILLERS[(k * 7 + 3) % len(FILLERS)]
        text = RULE_TEMPLATES[k % 3].format(
            a=f"claims about {f}",
            b=f"reversed claims about {g}",
            c=f"objects or animals named instead of {f}",
        )
        rules.append(
            Instruction(
                f"R{k + 1}",
                f"{f} and {g}",
                text,
                (("stereotype", "anti-stereotype", "unrelated")[k % 3],),
            )
        )
        system = render_system_prompt(
            task.description, task.labels, {}, InstructionSet(tuple(rules))
        )
        n = len(engine.tokenize(system))
        if n >= target_tokens:
            return system, n
        k += 1


async def measure(
    client: ChatClient,
    system: str,
    template: str,
    items: list[Any],
    labels: tuple[str, ...],
    cot: bool,
) -> list[dict[str, Any]]:
    out = []
    for e in [items[0], *items]:  # first call warms the prefix; not recorded
        user = template.format(**e.fields)
        if cot:
            msgs = [
                Message("system", system.rstrip("\n") + COT_SUFFIX + "\n"),
                Message("user", user),
            ]
            opts = GenOptions(max_tokens=256)
        else:
            msgs = [Message("system", system), Message("user", user)]
            opts = classify_options(labels)
        t0 = time.perf_counter()
        c = await client.complete(msgs, opts)
        wall = time.perf_counter() - t0
        t = c.extra.get("timings", {})
        out.append(
            {
                "wall_s": wall,
                "prompt_tokens": c.usage.prompt_tokens,
                "cached_tokens": c.usage.cached_prompt_tokens,
                "prefilled": t.get("prompt_n"),
                "decoded": t.get("predicted_n"),
                "prompt_ms": t.get("prompt_ms"),
                "predicted_ms": t.get("predicted_ms"),
            }
        )
    return out[1:]


async def rates(client: ChatClient) -> dict[str, float]:
    """Engine prefill rate on a fresh ~1k-token prompt and decode rate on a long generation."""
    filler = " ".join(f"Rule {i}: apply the policy on item {i} carefully." for i in range(90))
    c = await client.complete(
        [Message("system", f"[{time.time()}] {filler}"), Message("user", "ok")],
        GenOptions(max_tokens=1),
    )
    t = c.extra["timings"]
    d = await client.complete(
        [Message("user", "Write a long story about the sea.")], GenOptions(max_tokens=128)
    )
    u = d.extra["timings"]
    return {
        "prefill_tok_s": 1000 * t["prompt_n"] / t["prompt_ms"],
        "prefill_tokens": t["prompt_n"],
        "decode_tok_s": 1000 * u["predicted_n"] / u["predicted_ms"],
    }


def summarise(rows: list[dict[str, Any]], r: dict[str, float]) -> dict[str, Any]:
    walls = [x["wall_s"] for x in rows]
    engine = [(x["prompt_ms"] + x["predicted_ms"]) / 1000 for x in rows]
    floor = [x["prefilled"] / r["prefill_tok_s"] + x["decoded"] / r["decode_tok_s"] for x in rows]
    return {
        "n": len(rows),
        "p50_ms": 1000 * pct(walls, 50),
        "p95_ms": 1000 * pct(walls, 95),
        "prompt_tokens_p50": pct([x["prompt_tokens"] for x in rows], 50),
        "prefilled_p50": pct([x["prefilled"] for x in rows], 50),
        "decoded_p50": pct([x["decoded"] for x in rows], 50),
        "engine_ms_p50": 1000 * pct(engine, 50),
        "floor_ms_p50": 1000 * pct(floor, 50),
        "wall_over_engine_p50": pct([w / e for w, e in zip(walls, engine, strict=True)], 50),
        "wall_over_floor_p50": pct([w / f for w, f in zip(walls, floor, strict=True)], 50),
    }


async def throughput(task: Any, items: list[Any], system: str, slots: int) -> dict[str, Any]:
    model = LocalChatModel("smollm2", n_ctx=4096 * slots, n_parallel=slots)
    client = ChatClient(model, role="student", limits=Limits(max_concurrency=slots))
    opts = classify_options(task.labels)

    async def one(e: Any) -> None:
        await client.complete(
            [Message("system", system), Message("user", task.input_template.format(**e.fields))],
            opts,
        )

    await asyncio.gather(*(one(e) for e in items[:slots]))  # warm every slot's prefix
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(slots)

    async def bounded(e: Any) -> None:
        async with sem:
            await one(e)

    await asyncio.gather(*(bounded(e) for e in items))
    dt = time.perf_counter() - t0
    return {"slots": slots, "items": len(items), "seconds": dt, "items_per_s": len(items) / dt}


COLD = r"""
import asyncio, sys, time, json, urllib.request
t0 = float(sys.argv[1]); mode = sys.argv[2]; system = open(sys.argv[3]).read()
from pld.models.local import LocalChatModel
from pld.models.base import Message
from pld.phases.classify import classify_options
m = LocalChatModel("smollm2", n_ctx=4096, slot_save_path=sys.argv[4])
labels = ("stereotype", "anti-stereotype", "unrelated")
def post(path, body):
    req = urllib.request.Request(m.engine.address + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=60).read())
if mode == "restore":
    post("/slots/0?action=restore", {"filename": "pld-prefix.bin"})
c = asyncio.run(m.complete([Message("system", system), Message("user", "Sentence: x")],
                           classify_options(labels)))
first = time.time() - t0
if mode == "save":
    post("/slots/0?action=save", {"filename": "pld-prefix.bin"})
print(json.dumps({"first_label_s": first, "cached": c.usage.cached_prompt_tokens}))
"""


def cold_start(system: str) -> dict[str, Any]:
    import tempfile

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        sp = f"{d}/system.txt"
        Path(sp).write_text(system)
        for mode in ("plain", "save", "restore"):
            r = subprocess.run(
                [sys.executable, "-c", COLD, str(time.time()), mode, sp, d],
                capture_output=True,
                text=True,
                timeout=300,
            )
            try:
                out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                out[mode] = {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return out


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    task = load_stereoset(SHARED_DATA / "stereoset" / "stereoset.json")
    sp = stratified_split(task.examples, fractions=(0.5, 0.25, 0.25), seed=0)
    # A seeded shuffle: consecutive test items of one StereoSet cluster share their first
    # lines, which would let the prefix cache absorb part of every user message too.
    items = stratified_sample(sp.test, max(a.n, a.cot_n, 1), 0)
    random.Random(0).shuffle(items)
    model = LocalChatModel("smollm2", n_ctx=8192, flash_attn=a.flash_attn)
    client = ChatClient(model, role="student", limits=Limits(max_concurrency=1))
    r = await rates(client)
    zero = render_system_prompt(task.description, task.labels, {}, None)
    configs: list[tuple[str, str, bool, int]] = [("zero-shot", zero, False, a.n)]
    books = {}
    for target in (500, 1500, 4500):
        system, _ntok = rulebook(task, target, model.engine)
        books[target] = system
        configs.append((f"pld-{target}", system, False, a.n))
    configs.append(("cot", zero, True, a.cot_n))
    if a.quick:  # the flash-attention comparison needs only these two
        configs = [c for c in configs if c[0] in ("zero-shot", "pld-1500")]
    res: dict[str, Any] = {
        "machine": machine(),
        "flash_attn": a.flash_attn,
        "rates": r,
        "configs": {},
    }
    for name, system, cot, n in configs:
        rows = await measure(client, system, task.input_template, items[:n], task.labels, cot)
        res["configs"][name] = {
            "system_tokens": len(model.engine.tokenize(system)),
            **summarise(rows, r),
        }
        print(name, json.dumps(res["configs"][name]), flush=True)
    c = res["configs"]
    res["ratios"] = {"pld1500_over_zero_p50": c["pld-1500"]["p50_ms"] / c["zero-shot"]["p50_ms"]}
    if a.quick:
        return res
    res["ratios"]["cot_over_pld1500_p50"] = c["cot"]["p50_ms"] / c["pld-1500"]["p50_ms"]
    tp_items = (items * 10)[: a.throughput_n]
    res["throughput"] = [await throughput(task, tp_items, books[1500], s) for s in (1, 2)]
    res["ratios"]["throughput_2slots_over_1"] = (
        res["throughput"][1]["items_per_s"] / res["throughput"][0]["items_per_s"]
    )
    res["cold_start"] = cold_start(books[1500])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--cot-n", type=int, default=20)
    ap.add_argument("--throughput-n", type=int, default=200)
    ap.add_argument("--flash-attn", default="off", choices=["off", "on", "auto"])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="only zero-shot and PLD-1500 (for the flash-attention comparison)",
    )
    a = ap.parse_args()
    res = asyncio.run(main_async(a))
    print(json.dumps(res["ratios"], indent=2))
    name = "latency" if not a.quick else f"latency-quick-fa-{a.flash_attn}"
    print("saved", save(name, res))


if __name__ == "__main__":
    main()
