"""Run the service on uvicorn, and stop it gracefully.

The socket is bound here, before uvicorn starts, so port 0 works (the OS picks a free port and
``on_ready`` gets the real URL) and a port already in use fails with a one-line error before
the model is loaded. On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets in-flight
requests finish (up to ``graceful_timeout_s``), then the app's lifespan stops the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from pld.errors import ConfigError, PLDError

LOOPBACK = "127.0.0.1"


@dataclass
class Running:
    """Handed to ``on_ready`` once the service answers: its URL and a way to stop it from
    another thread (tests, embedding applications)."""

    url: str
    _server: object

    def stop(self) -> None:
        """Ask uvicorn to stop gracefully (in-flight requests finish); safe from another thread."""
        self._server.should_exit = True  # type: ignore[attr-defined]


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket before uvicorn or the model starts: port 0 yields the real port,
    and a port in use is a one-line ConfigError before any slow loading."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host"
        ) from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    app: Starlette,
    host: str = LOOPBACK,
    port: int = 8000,
    *,
    on_ready: Callable[[Running], None] | None = None,
    graceful_timeout_s: int = 30,
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (or ``Running.stop()``); blocks. Raises the
    classifier's own error (a ``PLDError``) when warm-up fails, e.g. the engine cannot load.
    ``sock``, from ``bind``, overrides host and port."""
    import uvicorn

    sock = sock or bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=graceful_timeout_s,
        server_header=False,
        access_log=False,  # request lines are in /metrics; logs stay free of client data
    )

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:
                on_ready(Running(f"http://{shown}:{bound_port}", self))

    server = _Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except SystemExit as e:  # uvicorn exits this way when the lifespan (warm-up) fails
        err = getattr(app.state, "startup_error", None)
        if isinstance(err, PLDError):
            raise err from None
        raise PLDError(f"the service did not start ({err or e}); see the log above") from None
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def run_service(
    run_dir: str | Path,
    student: str,
    *,
    host: str = LOOPBACK,
    port: int = 8000,
    concurrency: int | None = None,
    token: str | None = None,
    max_queue: int = 256,
    max_batch: int = 8,
    workers: int = 2,
    max_body_bytes: int = 256 * 1024,
    max_input_chars: int = 16_000,
    max_items: int = 64,
    on_ready: Callable[[Running], None] | None = None,
    log_level: str = "info",
    cite: bool = False,
) -> None:
    """Everything ``pld serve RUN_DIR --student SPEC`` does: load the run (a bad run directory
    or model spec fails here, before binding), build the app, serve until stopped. ``cite``:
    every answer carries its cited rule."""
    from pld.service.adapter import RunDirClassifier
    from pld.service.app import create_app

    sock = bind(host, port)  # a port in use fails before the model loads
    try:
        classifier = RunDirClassifier.from_spec(
            run_dir, student, concurrency=concurrency, cite=cite
        )
    except BaseException:
        sock.close()
        raise
    app = create_app(
        classifier,
        max_queue=max_queue,
        max_batch=max_batch,
        workers=workers,
        token=token,
        max_body_bytes=max_body_bytes,
        max_input_chars=max_input_chars,
        max_items=max_items,
    )
    serve(app, on_ready=on_ready, log_level=log_level, sock=sock)
