"""A bounded item queue drained in micro-batches onto the student engine.

Why a queue in front of the engine at all: the engine has a fixed number of slots (the
``ChatClient`` semaphore bounds them), and an HTTP server accepts connections faster than a CPU
model answers. Without a bound, overload turns into unbounded memory and latency; with one, the
excess is refused at once with 503 + ``Retry-After`` and the admitted work keeps its latency.

Admission is all-or-nothing per request (a list of 10 items is either queued whole or refused
whole), so a client never gets half an answer. Workers take up to ``max_batch`` waiting items
at a time — items from different requests share a batch — and hand them to ``classify``; two
workers by default, so one batch forms while the other runs. An item whose request has gone
(its future was cancelled) is skipped before it reaches the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from pld.predictions import Prediction

log = logging.getLogger(__name__)

ClassifyFn = Callable[[list[Mapping[str, str]]], Awaitable[list[Prediction]]]


class QueueFull(Exception):
    """The queue cannot take the request's items now; ``retry_after`` is a whole-second hint."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceStopping(Exception):
    """The service shut down before the item was classified."""


class BatchMismatch(Exception):
    """The classifier returned a different number of predictions than it was given items."""


@dataclass
class _Job:
    fields: Mapping[str, str]
    future: asyncio.Future[Prediction]


class MicroBatcher:
    """The bounded queue with its workers: admits a request's items whole or refuses them at once
    (``QueueFull``), and feeds them to ``classify`` in micro-batches of at most ``max_batch``."""

    def __init__(
        self,
        classify: ClassifyFn,
        *,
        max_queue: int,
        max_batch: int,
        workers: int = 2,
        on_batch: Callable[[int, Exception | None], None] | None = None,
    ) -> None:
        if max_queue < 1 or max_batch < 1 or workers < 1:
            raise ValueError("max_queue, max_batch and workers must be >= 1")
        self._classify = classify
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.workers = workers
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._item_s = 0.0  # EWMA of wall seconds per item, for Retry-After

    @property
    def depth(self) -> int:
        """Items waiting for a worker: the queue-depth gauge, and what ``Retry-After`` scales."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def in_flight(self) -> int:
        """Items a worker has handed to ``classify`` and not yet answered."""
        return self._in_flight

    @property
    def running(self) -> bool:
        """Whether the workers run: ``start`` and ``stop`` bracket the app's lifespan."""
        return bool(self._tasks)

    def start(self) -> None:
        """Start the workers on the running loop (the server's, so futures and queue share it)."""
        if self._tasks:
            return
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._tasks = [
            asyncio.get_running_loop().create_task(self._worker(), name=f"pld-batcher-{k}")
            for k in range(self.workers)
        ]

    async def stop(self) -> None:
        """Stop the workers; anything still queued fails with ``ServiceStopping`` (the server
        drains in-flight requests before it calls this, so normally nothing is left)."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        q = self._queue
        while q is not None and not q.empty():
            job = q.get_nowait()
            if not job.future.done():
                job.future.set_exception(ServiceStopping("the service is shutting down"))

    def retry_after(self) -> int:
        """Seconds until the queue has probably drained: depth x observed seconds per item,
        clamped to 1..60."""
        est = self.depth * self._item_s
        return int(min(60, max(1, math.ceil(est))))

    def submit(self, items: Sequence[Mapping[str, str]]) -> list[asyncio.Future[Prediction]]:
        """Queue all items or none. No await between the room check and the puts, so on one
        event loop the check cannot go stale."""
        q = self._queue
        if q is None or not self._tasks:
            raise ServiceStopping("the service is not accepting work (starting or stopping)")
        room = self.max_queue - q.qsize()
        if len(items) > room:
            raise QueueFull(
                f"the queue is full ({q.qsize()} of {self.max_queue} items waiting); retry later",
                self.retry_after(),
            )
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Prediction]] = []
        for fields in items:
            fut: asyncio.Future[Prediction] = loop.create_future()
            q.put_nowait(_Job(fields, fut))
            futures.append(fut)
        return futures

    async def _take(self) -> list[_Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return [j for j in batch if not j.future.done()]  # cancelled: the client left

    async def _worker(self) -> None:
        while True:
            batch = await self._take()
            if not batch:
                continue
            self._in_flight += len(batch)
            t0 = time.perf_counter()
            error: Exception | None = None
            try:
                preds = await self._classify([j.fields for j in batch])
                if len(preds) != len(batch):
                    raise BatchMismatch(
                        f"the classifier returned {len(preds)} predictions for {len(batch)} items"
                    )
            except asyncio.CancelledError:
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(ServiceStopping("the service is shutting down"))
                raise
            except Exception as e:  # the engine failed: fail this batch, keep serving
                log.warning("a micro-batch of %d items failed: %s", len(batch), e)
                error = e
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
            else:
                for j, p in zip(batch, preds, strict=True):
                    if not j.future.done():
                        j.future.set_result(p)
            finally:
                self._in_flight -= len(batch)
            per_item = (time.perf_counter() - t0) / len(batch)
            self._item_s = per_item if self._item_s == 0 else 0.8 * self._item_s + 0.2 * per_item
            if self._on_batch is not None:
                self._on_batch(len(batch), error)
