"""Volume prediction throughput: ``pld predict --concurrency N`` against an OpenAI-compatible
server with several slots.

    python -m bench.volume [--levels 1,2,4] [--n 32] [--slots 4] [--threads 0]
    python -m bench.volume --student 'openai:NAME@http://gpu-box:8000/v1?dialect=vllm' \\
        --levels 1,16,64 --n 512        # an engine you already run (vLLM, SGLang)

Without ``--student`` it starts ``python -m pld.serve`` (llama.cpp serving SmolLM2 with
``--slots`` slots) on 127.0.0.1 with an OS-chosen port, over a run directory for the built-in
support-ticket task (hand-written rules, no teacher needed). The rulebook's calibration prior is
measured once first, which also puts the system prompt into the engine's prefix cache; then, per
concurrency level, ``Rulebook.apredict`` classifies ``--n`` tickets with that many requests in
flight, without the pld cache. Each level gets its own tickets, so no level is served from the
engine's cache of another level's prompts. Reports items/s, p50/p99 per-request latency, the
most requests actually in flight, and invalid outputs; writes ``bench/results/<--out>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine, pct, save, stop_process
from bench.load import demo_run_dir
from pld.models.client import ChatClient
from pld.rulebook import Rulebook


class Engine:
    """``python -m pld.serve`` (llama.cpp) in a child process on 127.0.0.1."""

    def __init__(self, slots: int, threads: int, ctx: int) -> None:
        cmd = [sys.executable, "-m", "pld.serve", "--port", "0", "--slots", str(slots)]
        self.proc = subprocess.Popen(
            [*cmd, "--threads", str(threads), "--ctx", str(ctx)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("LISTENING http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the llama.cpp server did not start: {line!r}")
        self.spec = f"openai:smollm2@{line.split(' ', 1)[1]}?dialect=llamacpp"

    def stop(self) -> None:
        stop_process(self.proc)


async def run_levels(
    rb: Rulebook, spec: str, texts: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    warm = rb.student_client(spec, concurrency=1)
    prior = await rb.aprior(warm)  # once, as the service does; warms the prefix cache
    rows = []
    for k, level in enumerate(args.levels):
        client: ChatClient = rb.student_client(spec, concurrency=level)
        items = [
            (f"L{level}-{j}", {"text": texts[(k * args.n + j) % len(texts)]}, None)
            for j in range(args.n)
        ]
        t0 = time.perf_counter()
        preds = await rb.apredict(items, client, prior=prior)
        wall = time.perf_counter() - t0
        lat = [p.latency_s for p in preds]
        row = {
            "concurrency": level,
            "items": len(preds),
            "items_per_s": len(preds) / wall if wall else 0.0,
            "p50_s": pct(lat, 50),
            "p99_s": pct(lat, 99),
            "wall_s": wall,
            "max_in_flight": client.max_in_flight,
            "invalid": sum(1 for p in preds if p.label is None),
            "answered": len({p.id for p in preds}),
        }
        rows.append(row)
        print(
            f"concurrency {level:>3}: {row['items_per_s']:.2f} items/s, p50 {row['p50_s']:.3f}s,"
            f" p99 {row['p99_s']:.3f}s, in flight {row['max_in_flight']}, "
            f"invalid {row['invalid']}, answered {row['answered']}/{args.n}"
        )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.volume", description=__doc__)
    ap.add_argument("--levels", default="1,2,4", help="concurrency levels")
    ap.add_argument("--n", type=int, default=32, help="items per level")
    ap.add_argument("--student", default=None, help="an OpenAI-compatible engine you run")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all)")
    ap.add_argument("--ctx", type=int, default=4096, help="shared by the slots")
    ap.add_argument("--out", default="volume")
    a = ap.parse_args(argv)
    a.levels = [int(x) for x in a.levels.split(",")]
    if not 1 <= a.n <= 100_000 or any(x < 1 for x in a.levels):
        ap.error("--n must be in 1..100000 and every level >= 1")
    return a


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    engine = None if args.student else Engine(args.slots, args.threads, args.ctx)
    spec = args.student or (engine.spec if engine else "")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir, texts = demo_run_dir(Path(tmp) / "run")
            rows = asyncio.run(run_levels(Rulebook.load(run_dir), spec, texts, args))
    finally:
        if engine is not None:
            engine.stop()
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "student")}
    p = save(
        args.out,
        {
            "machine": machine(),
            "engine": "llama.cpp" if engine else "external",
            "settings": settings,
            "levels": rows,
        },
    )
    print(f"wrote {p}")


if __name__ == "__main__":
    main()
