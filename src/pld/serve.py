"""Serve a GGUF over an OpenAI-compatible HTTP API (llama.cpp through xllamacpp).

Used by the tests and benchmarks to stand up a real endpoint for the ``openai`` backend, and by
users who want one engine shared by several processes. Binds 127.0.0.1 unless told otherwise.
Prints ``LISTENING <base_url>`` once ready, then serves until killed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.request

from pld.errors import ConfigError
from pld.models.base import check_option
from pld.models.local import resolve_model_path


def start_server(
    model: str = "smollm2",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    n_ctx: int = 8192,
    slots: int = 1,
    threads: int = 0,
) -> tuple[object, str]:
    """Start an in-process llama.cpp HTTP server; return (server, base_url with /v1)."""
    import xllamacpp

    check_option("ctx", n_ctx)
    check_option("slots", slots)
    check_option("threads", threads)

    p = xllamacpp.CommonParams()
    p.model.path = str(resolve_model_path(model))
    p.model_alias = model if "/" not in model else os.path.basename(model)
    p.hostnames = [host]
    p.port = port
    p.n_ctx = n_ctx
    p.n_parallel = slots
    n = threads or (os.cpu_count() or 2)
    p.cpuparams.n_threads = n
    p.cpuparams_batch.n_threads = n
    p.embedding = True  # one server answers chat and embeddings
    p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    p.verbosity = -1
    p.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    server = xllamacpp.Server(p)
    root = str(server.listening_address).rstrip("/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(root + "/health", timeout=2) as r:
                if r.status == 200:
                    return server, root + "/v1"
        except OSError:
            time.sleep(0.1)
    raise ConfigError(
        f"the llama.cpp server at {root} did not become healthy within 60s; check the "
        "model file and the ctx/slots/threads options"
    )


def serve_until_stopped(server: object, url: str) -> None:
    """Announce ``LISTENING <base_url>`` on stdout, then serve until SIGTERM or Ctrl-C."""
    sys.stdout.write(f"LISTENING {url}\n")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    del server


def main(argv: list[str] | None = None) -> int:
    """``python -m pld.serve``: the same server without the pld CLI around it."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pld.serve", description=__doc__)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    server, url = start_server(
        a.model, host=a.host, port=a.port, n_ctx=a.ctx, slots=a.slots, threads=a.threads
    )
    serve_until_stopped(server, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
