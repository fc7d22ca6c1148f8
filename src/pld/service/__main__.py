"""``python -m pld.service RUN_DIR --student SPEC``: the service without the ``pld`` CLI (used
by ``bench/load.py``). Prints ``LISTENING <url>`` once it answers. The bearer token is read
from an environment variable, never from the command line (which ``ps`` shows)."""

from __future__ import annotations

import argparse
import os
import sys

from pld.errors import PLDError
from pld.service.runner import LOOPBACK, Running, run_service


def _ready(r: Running) -> None:
    sys.stdout.write(f"LISTENING {r.url}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the service from argv and return the exit code: 2 with a one-line error for a PLDError,
    so a load script can tell bad arguments from a crash."""
    ap = argparse.ArgumentParser(prog="python -m pld.service", description=__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--student", required=True, help="e.g. local:smollm2?slots=4")
    ap.add_argument("--host", default=LOOPBACK)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--concurrency", type=int, default=None, help="default: the engine's slots")
    ap.add_argument("--token-env", default="PLD_SERVE_TOKEN", help="env var with a bearer token")
    ap.add_argument("--max-queue", type=int, default=256)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-body-bytes", type=int, default=256 * 1024)
    ap.add_argument("--max-input-chars", type=int, default=16_000)
    ap.add_argument("--max-items", type=int, default=64)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--cite", action="store_true", help="answer with each label's cited rule")
    a = ap.parse_args(argv)
    try:
        run_service(
            a.run_dir,
            a.student,
            host=a.host,
            port=a.port,
            concurrency=a.concurrency,
            token=os.environ.get(a.token_env) or None,
            max_queue=a.max_queue,
            max_batch=a.max_batch,
            workers=a.workers,
            max_body_bytes=a.max_body_bytes,
            max_input_chars=a.max_input_chars,
            max_items=a.max_items,
            on_ready=_ready,
            log_level=a.log_level,
            cite=a.cite,
        )
    except PLDError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
