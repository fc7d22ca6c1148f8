"""Load test of the classify service on the embedded model (SmolLM2-135M via xllamacpp).

    python -m bench.load [--clients 1,4,16] [--requests 200] [--max-seconds 120] [--slots 4]

Starts ``python -m pld.service`` on 127.0.0.1 (an OS-chosen port) over a run directory for the
built-in support-ticket task (hand-written rules, so no teacher is needed), then, for each
client count, runs closed-loop asyncio clients until ``--requests`` requests are answered or
``--max-seconds`` pass. Every item carries a unique id; an answer is checked against the ids it
was sent for, so a dropped, duplicated or misrouted answer is counted, not assumed away. A 503
is counted and retried after its Retry-After (at most ``--max-retries`` times). Reports
sustained items/s, p50/p99 request latency, errors and 503s per level, plus the server's own
counters from /metrics, and writes ``bench/results/<--out>.json``. Bounded by construction:
loopback only, a request cap and a time cap per level; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, machine, pct, save, stop_process
from pld.rulebook import Rulebook
from pld.rules import Instruction, InstructionSet
from pld.tasks.files import load_task

RULES = {
    "billing": "If the ticket is about a charge, refund, invoice, price or payment method, "
    "the label is billing.",
    "technical": "If something in the product does not work (an error, crash, bug or "
    "slowness), the label is technical.",
    "account": "If the ticket is about logging in, passwords, the profile or access rights, "
    "the label is account.",
    "shipping": "If the ticket is about a delivery, tracking, a lost or damaged parcel or a "
    "return, the label is shipping.",
}


def demo_run_dir(path: Path) -> tuple[Path, list[str]]:
    """A run directory written by ``Distiller.save`` for the built-in task; returns it and the
    ticket texts to send."""
    task = load_task("demo")
    rules = InstructionSet(
        tuple(
            Instruction(f"R{k}", lab, text, (lab,), (), ())
            for k, (lab, text) in enumerate(RULES.items(), 1)
        ),
        version=1,
    )
    return Rulebook.build(task, rules).save(path), [e.fields["text"] for e in task.examples]


class Server:
    """``python -m pld.service`` in a child process, bound to 127.0.0.1."""

    def __init__(self, run_dir: Path, student: str, extra: list[str]) -> None:
        cmd = [sys.executable, "-m", "pld.service", str(run_dir), "--student", student]
        self.proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", "0", *extra],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("LISTENING http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the service did not start: {line!r}")
        self.url = line.split(" ", 1)[1]

    def stop(self) -> int | None:
        return stop_process(self.proc)


@dataclass
class Level:
    clients: int
    latencies: list[float] = field(default_factory=list)
    answered: Counter[str] = field(default_factory=Counter)
    sent: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    misrouted: int = 0
    dropped: int = 0  # items that got no answer at all: missing from a 200, or no response
    invalid: int = 0
    requests: int = 0
    wall_s: float = 0.0


async def one_request(
    c: httpx.AsyncClient, lv: Level, ids: list[str], texts: list[str], max_retries: int
) -> None:
    body = {"inputs": [{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)]}
    lv.sent.update(ids)
    for _attempt in range(max_retries + 1):
        t0 = time.perf_counter()
        try:
            r = await c.post("/v1/classify", json=body)
        except httpx.HTTPError:
            lv.transport_errors += 1
            lv.dropped += len(ids)
            return
        lv.statuses[r.status_code] += 1
        if r.status_code == 503:
            await asyncio.sleep(min(2.0, float(r.headers.get("Retry-After", "1"))))
            continue
        if r.status_code != 200:
            return
        lv.latencies.append(time.perf_counter() - t0)
        results = r.json()["results"]
        got = [x["id"] for x in results]
        lv.misrouted += int(got != ids)
        lv.dropped += len(set(ids) - set(got))
        lv.answered.update(got)
        lv.invalid += sum(1 for x in results if not x["valid"])
        return


async def run_level(url: str, clients: int, args: argparse.Namespace, texts: list[str]) -> Level:
    lv = Level(clients)
    counter = itertools.count()
    deadline = time.perf_counter() + args.max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(c: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            if n >= args.requests:
                return
            lv.requests += 1
            ids = [f"c{clients}-r{n}-i{j}" for j in range(args.items_per_request)]
            batch = [texts[(n * args.items_per_request + j) % len(texts)] for j in range(len(ids))]
            await one_request(c, lv, ids, batch, args.max_retries)

    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        lv.wall_s = time.perf_counter() - t0
    return lv


def summarise(lv: Level, server: dict[str, float]) -> dict[str, Any]:
    answered = sum(lv.answered.values())
    ok_requests = len(lv.latencies)
    return {
        "clients": lv.clients,
        "requests": lv.requests,
        "ok_requests": ok_requests,
        "items_answered": answered,
        "items_per_s": answered / lv.wall_s if lv.wall_s else 0.0,
        "p50_s": pct(lv.latencies, 50),
        "p99_s": pct(lv.latencies, 99),
        "wall_s": lv.wall_s,
        "status_503": lv.statuses.get(503, 0),
        "errors": lv.transport_errors
        + sum(n for s, n in lv.statuses.items() if s not in (200, 503)),
        "statuses": {str(s): n for s, n in sorted(lv.statuses.items())},
        # every item must come back exactly once, under its own id, or be refused explicitly
        "dropped": lv.dropped,
        "refused_items": sum(1 for i in lv.sent if lv.answered[i] == 0) - lv.dropped,
        "duplicated": sum(n - 1 for n in lv.answered.values() if n > 1),
        "foreign_ids": sum(1 for i in lv.answered if i not in lv.sent),
        "misrouted_responses": lv.misrouted,
        "invalid_outputs": lv.invalid,
        "server": server,
    }


def scrape(url: str) -> dict[str, float]:
    """The server's own counters (to cross-check the client's view)."""
    keep = (
        "pld_invalid_outputs_total",
        "pld_queue_rejections_total",
        "pld_engine_errors_total",
        "pld_client_disconnects_total",
        "pld_batch_size_items_sum",
        "pld_batch_size_items_count",
    )
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in keep:
            out[name] = float(value)
    return out


async def main_async(args: argparse.Namespace, server: Server, texts: list[str]) -> list[Any]:
    async with httpx.AsyncClient(base_url=server.url, timeout=args.timeout) as c:
        warm = await c.post("/v1/classify", json={"input": {"id": "warm", "text": texts[0]}})
        warm.raise_for_status()
    rows = []
    for n in args.clients:
        before = scrape(server.url)
        lv = await run_level(server.url, n, args, texts)
        after = scrape(server.url)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        row = summarise(lv, delta)
        rows.append(row)
        print(
            f"clients {n:>3}: {row['items_per_s']:.2f} items/s, p50 {row['p50_s']:.3f}s, "
            f"p99 {row['p99_s']:.3f}s, 503s {row['status_503']}, errors {row['errors']}, "
            f"dropped {row['dropped']}, duplicated {row['duplicated']}"
        )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=200, help="per client level")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="per client level")
    ap.add_argument("--items-per-request", type=int, default=1)
    ap.add_argument("--max-retries", type=int, default=3, help="retries after a 503")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="load")
    a = ap.parse_args(argv)
    a.clients = [int(x) for x in a.clients.split(",")]
    if a.requests < 1 or a.requests > 100_000 or a.max_seconds <= 0:
        ap.error("--requests must be in 1..100000 and --max-seconds > 0")
    return a


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    student = f"local:smollm2?ctx=4096&slots={args.slots}&threads={args.threads}"
    extra = ["--max-queue", str(args.max_queue), "--max-batch", str(args.max_batch)]
    extra += ["--workers", str(args.workers), "--max-items", str(args.items_per_request)]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, texts = demo_run_dir(Path(tmp) / "run")
        server = Server(run_dir, student, extra)
        try:
            rows = asyncio.run(main_async(args, server, texts))
        finally:
            rc = server.stop()
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    p = save(
        args.out,
        {
            "machine": machine(),
            "student": student,
            "settings": settings,
            "server_exit_code": rc,
            "levels": rows,
        },
    )
    print(f"wrote {p}")


if __name__ == "__main__":
    main()
