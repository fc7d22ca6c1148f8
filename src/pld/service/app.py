"""The HTTP service: a distilled classifier behind ``POST /v1/classify``.

Why Starlette on uvicorn (not FastAPI): the service has four routes and hand-checked input
(the error messages name the fix, which generated validation errors do not), so FastAPI's
pydantic models and OpenAPI generation would add a layer without adding a check. Starlette is
the ASGI toolkit FastAPI itself is built on, well kept, small, typed, and gives pure-ASGI
middleware and lifespan hooks; uvicorn is the reference ASGI server (graceful shutdown,
h11 HTTP/1.1, pre-bound sockets for port 0).

Routes: ``POST /v1/classify``, ``GET /healthz`` (never needs the token, for load balancers),
``GET /v1/rulebook`` (the rules with provenance) and ``GET /metrics`` (Prometheus text).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pld.errors import BackendError
from pld.predictions import Prediction
from pld.service.base import Classifier, check_info, result_json
from pld.service.metrics import CONTENT_TYPE, ServiceMetrics
from pld.service.queue import MicroBatcher, QueueFull, ServiceStopping
from pld.service.validate import (
    InputLimits,
    RequestError,
    check_content_type,
    decode_json,
    parse_request,
)

log = logging.getLogger(__name__)

ROUTES = ("/v1/classify", "/healthz", "/v1/rulebook", "/metrics")
OPEN_ROUTES = frozenset({"/healthz"})
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"; never reaches a client


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Every error the service returns has this one JSON shape, so a client parses one format."""
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


class _Instrument:
    """Counts every request by route and status and times it (pure ASGI, so it also sees the
    401s, 404s and 413s that never reach a handler)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500
        t0 = time.perf_counter()

        async def send_status(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.inc(route, str(status))
            self.metrics.latency.observe(time.perf_counter() - t0, route)


class _BearerAuth:
    """``Authorization: Bearer <token>`` on every route but /healthz. Compared in constant
    time; the token is held only here and appears in no message or log."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._expected = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._expected is None or scope["path"] in OPEN_ROUTES:
            await self.app(scope, receive, send)
            return
        given = b""
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                given = v
        scheme, _, cred = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(cred.strip(), self._expected):
            await self.app(scope, receive, send)
            return
        resp = error_response(
            401,
            "unauthorized",
            "this service needs 'Authorization: Bearer <token>' with the token it was started with",
            headers={"WWW-Authenticate": 'Bearer realm="pld"'},
        )
        await resp(scope, receive, send)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client goes away. Only called once the body is read, so the next
    message the server sends is ``http.disconnect``."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


class _Service:
    def __init__(
        self,
        classifier: Classifier,
        batcher: MicroBatcher,
        metrics: ServiceMetrics,
        limits: InputLimits,
    ) -> None:
        self.classifier = classifier
        self.info = classifier.info()
        check_info(self.info)
        self.version = str(self.info["rulebook_version"])
        self.fields: Sequence[str] = list(dict.fromkeys(self.info["input_fields"]))
        self.batcher = batcher
        self.metrics = metrics
        self.limits = limits
        self.ready = False

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.classifier.warmup()
        except Exception as e:  # kept for serve(), which re-raises it as the CLI's error
            app.state.startup_error = e
            raise
        self.batcher.start()
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            await self.batcher.stop()

    async def read_body(self, request: Request) -> bytes:
        cap = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, "bad_content_length", "Content-Length is not a number")
            if int(declared) > cap:
                raise RequestError(413, "body_too_large", f"the body exceeds {cap} bytes")
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > cap:
                raise RequestError(413, "body_too_large", f"the body exceeds {cap} bytes")
        return bytes(buf)

    async def answers(
        self, request: Request, futures: list[asyncio.Future[Prediction]]
    ) -> list[Prediction | BaseException] | None:
        """All answers, or None when the client left first (its queued items are then
        cancelled, so the engine never sees them)."""
        gathered = asyncio.gather(*futures, return_exceptions=True)
        watcher = asyncio.ensure_future(_disconnected(request.receive))
        try:
            waiters: set[asyncio.Future[Any]] = {gathered, watcher}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            left = not gathered.done()
            if left:  # cancelling the gather cancels the queued items' futures
                gathered.cancel()
        return None if left else list(gathered.result())

    def failure(self, err: BaseException) -> JSONResponse:
        if isinstance(err, ServiceStopping):
            return error_response(503, "unavailable", str(err), {"Retry-After": "1"})
        if isinstance(err, BackendError):
            return error_response(
                502,
                "engine_error",
                f"the student engine failed ({type(err).__name__}); the service is still up, "
                "retry the request",
            )
        log.error("classification failed: %r", err)
        return error_response(
            500, "internal_error", f"classification failed ({type(err).__name__})"
        )

    async def classify(self, request: Request) -> Response:
        check_content_type(request.headers.get("content-type"))
        try:
            body = await self.read_body(request)
        except ClientDisconnect:
            self.metrics.disconnects.inc()
            return Response(status_code=CLIENT_CLOSED)
        parsed = parse_request(decode_json(body), self.fields, self.limits)
        try:
            futures = self.batcher.submit(parsed.items)
        except QueueFull as e:
            self.metrics.rejected.inc()
            return error_response(503, "overloaded", str(e), {"Retry-After": str(e.retry_after)})
        except ServiceStopping as e:
            return error_response(503, "unavailable", str(e), {"Retry-After": "1"})
        outcome = await self.answers(request, futures)
        if outcome is None:
            self.metrics.disconnects.inc()
            return Response(status_code=CLIENT_CLOSED)
        errors = [r for r in outcome if isinstance(r, BaseException)]
        if errors:
            return self.failure(errors[0])
        preds = [r for r in outcome if isinstance(r, Prediction)]
        results = [result_json(i, p, self.version) for i, p in zip(parsed.ids, preds, strict=True)]
        n_invalid = sum(1 for r in results if not r["valid"])
        self.metrics.items.inc("valid", amount=len(results) - n_invalid)
        if n_invalid:
            self.metrics.items.inc("invalid", amount=n_invalid)
            self.metrics.invalid.inc(amount=n_invalid)
        if parsed.single:
            return JSONResponse(results[0])
        return JSONResponse(
            {"rulebook_version": self.version, "results": results, "invalid": n_invalid}
        )

    async def healthz(self, _request: Request) -> Response:
        body = {
            "status": "ok" if self.ready else "starting",
            "rulebook_version": self.version,
            "queue_depth": self.batcher.depth,
            "in_flight": self.batcher.in_flight,
        }
        return JSONResponse(body, 200 if self.ready else 503)

    async def rulebook(self, _request: Request) -> Response:
        return JSONResponse(self.info)

    async def metrics_page(self, _request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    def on_batch(self, size: int, error: Exception | None) -> None:
        self.metrics.batch_size.observe(size)
        if error is not None:
            self.metrics.engine_errors.inc()


async def _request_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, exc.code, exc.message)


def create_app(
    classifier: Classifier,
    *,
    max_queue: int = 256,
    max_batch: int = 8,
    workers: int = 2,
    token: str | None = None,
    max_body_bytes: int = 256 * 1024,
    max_input_chars: int = 16_000,
    max_items: int = 64,
) -> Starlette:
    """The ASGI app. ``max_queue`` bounds waiting items (beyond it: 503 + Retry-After);
    ``max_batch`` is the most items handed to the classifier at once and ``workers`` how many
    such batches run together (the engine's own slot limit still applies inside a batch)."""
    if token is not None and not token.strip():
        raise ValueError("the bearer token is empty; pass a real token or none")
    if max_items > max_queue:
        max_items = max_queue  # a request larger than the queue could never be admitted
    batcher = MicroBatcher(
        classifier.classify,
        max_queue=max_queue,
        max_batch=max_batch,
        workers=workers,
        on_batch=lambda n, e: svc.on_batch(n, e),
    )
    metrics = ServiceMetrics(lambda: batcher.depth, lambda: batcher.in_flight)
    svc = _Service(
        classifier, batcher, metrics, InputLimits(max_body_bytes, max_input_chars, max_items)
    )
    app = Starlette(
        routes=[
            Route("/v1/classify", svc.classify, methods=["POST"]),
            Route("/healthz", svc.healthz, methods=["GET"]),
            Route("/v1/rulebook", svc.rulebook, methods=["GET"]),
            Route("/metrics", svc.metrics_page, methods=["GET"]),
        ],
        middleware=[Middleware(_Instrument, metrics=metrics), Middleware(_BearerAuth, token=token)],
        exception_handlers={RequestError: _request_error},
        lifespan=svc.lifespan,
    )
    app.state.service = svc
    return app
