"""THE client wrapper: every model call in pld goes through here, and nothing here is
re-implemented by a backend.

What it adds around a bare ``ChatModel`` / ``Embedder``:
  * a content-addressed cache (hits cost zero calls and are marked ``cached``);
  * bounded concurrency, a requests- and tokens-per-minute limiter;
  * retries with exponential backoff and jitter on timeouts, lost connections, 429 and 5xx,
    honouring Retry-After;
  * usage and cost accounting per role and phase, and hard caps that raise
    ``BudgetExceeded`` before the call that would cross them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from pld.cache import Cache, cache_key
from pld.errors import BackendError, BackendTimeout, BudgetExceeded, ConfigError
from pld.models.base import ChatModel, Completion, Embedder, GenOptions, Message, Usage

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def cost(self, usage: Usage) -> float:
        """The dollars a call with this usage costs: what the cost cap and the ledger count."""
        return (
            usage.prompt_tokens * self.input_per_mtok
            + usage.completion_tokens * self.output_per_mtok
        ) / 1e6


@dataclass(frozen=True)
class Limits:
    """How hard a client may push one backend (concurrency, rate, timeout) and how it retries;
    invalid limits fail at construction, not mid-run."""

    max_concurrency: int = 4
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float | None = 600.0
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1")
        if self.max_retries < 0:
            raise ConfigError("max_retries must be >= 0")


@dataclass
class RoleStats:
    """Running totals for one (role, phase): calls, failures and retries are counted, never
    dropped, so a run's report accounts for every call it made."""

    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The form written to ``run.json`` and the run summaries."""
        return asdict(self)


@dataclass(frozen=True)
class Reservation:
    """One call admitted under the caps: its slot and worst-case cost are held until the
    call settles, so concurrent callers can never jointly cross a cap."""

    role: str
    phase: str
    cost_usd: float


class Accountant:
    """Usage per (role, phase), shared by every client of one run, and the run's hard caps.

    The caps are enforced by reservation: a call takes one call slot and its worst-case cost
    (``reserve``) before it is sent, inside the client's concurrency-limited section, and gives
    them back for its real usage when it settles. Checking the totals alone would let every
    call queued behind the semaphore pass the check before any of them had finished."""

    def __init__(self, *, max_calls: int | None = None, max_cost_usd: float | None = None) -> None:
        self.max_calls = max_calls
        self.max_cost_usd = max_cost_usd
        self.phase = "-"
        self.stats: dict[tuple[str, str], RoleStats] = {}
        # one accountant may serve clients on several event loops / threads
        self._lock = threading.Lock()
        self._held_calls = 0
        self._held_cost = 0.0
        # worst-case cost of attempts that may have been billed without reporting usage
        # (timeouts: the server may still be generating); counts against the cost cap
        self.unsettled_cost_usd = 0.0
        self._listeners: list[Callable[[bool], None]] = []

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(billed)`` after every change to the usage: ``billed`` is True for
        a call that was sent (it may cost money), False for a cache hit. A run's ledger
        listens, so the usage on disk never lags the calls that were paid for."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[bool], None]) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, billed: bool) -> None:
        # outside the lock: a listener reads the totals
        for listener in list(self._listeners):
            listener(billed)

    def _s(self, role: str, phase: str | None = None) -> RoleStats:
        return self.stats.setdefault((role, phase or self.phase), RoleStats())

    @property
    def total_calls(self) -> int:
        """Calls sent across every role and phase: what the ``max_calls`` cap counts."""
        return sum(s.calls for s in self.stats.values())

    @property
    def total_cost(self) -> float:
        """Dollars spent across every role and phase: what the cost cap counts."""
        return sum(s.cost_usd for s in self.stats.values())

    def check_budget(self) -> None:
        """Refuse when a cap is already reached: a cheap early exit before queueing; the
        binding check is ``reserve``."""
        with self._lock:
            self._check(0.0)

    def _check(self, worst_cost: float) -> None:
        if self.max_calls is not None and self.total_calls + self._held_calls >= self.max_calls:
            raise BudgetExceeded(
                f"the call cap max_calls={self.max_calls} is reached; completed calls are "
                "cached — raise --max-calls and rerun with --resume to continue"
            )
        if self.max_cost_usd is None:
            return
        spent = self.total_cost + self.unsettled_cost_usd
        if spent >= self.max_cost_usd or spent + self._held_cost + worst_cost > self.max_cost_usd:
            raise BudgetExceeded(
                f"the cost cap max_cost_usd={self.max_cost_usd} is reached (spent "
                f"${spent:.4f}; the next call could cost up to ${worst_cost:.4f}); raise "
                "--max-cost and rerun with --resume"
            )

    def reserve(self, role: str, worst_cost: float) -> Reservation | None:
        """Admit one call: hold a call slot and ``worst_cost``. Raises ``BudgetExceeded`` when
        the call cannot fit even after every call in flight settles; returns None when it
        may fit once they do (the caller waits and asks again), so the worst-case estimate of
        calls in flight does not end a run early."""
        with self._lock:
            if self.max_cost_usd is not None and self._held_calls > 0:
                spent = self.total_cost + self.unsettled_cost_usd
                over_now = spent + self._held_cost + worst_cost > self.max_cost_usd
                if over_now and spent + worst_cost <= self.max_cost_usd:
                    self._check(-self._held_cost)  # the call cap still refuses at once
                    return None
            self._check(worst_cost)
            self._held_calls += 1
            self._held_cost += worst_cost
            return Reservation(role, self.phase, worst_cost)

    def _release(self, r: Reservation) -> RoleStats:
        self._held_calls -= 1
        # reset when idle, so float residue never looks like a call in flight
        self._held_cost = self._held_cost - r.cost_usd if self._held_calls else 0.0
        s = self._s(r.role, r.phase)
        s.calls += 1
        return s

    def settle(self, r: Reservation, usage: Usage, latency: float, cost: float) -> None:
        """The call succeeded: its real usage and cost replace the reservation."""
        with self._lock:
            s = self._release(r)
            s.prompt_tokens += usage.prompt_tokens
            s.completion_tokens += usage.completion_tokens
            s.cached_prompt_tokens += usage.cached_prompt_tokens
            s.cost_usd += cost
            s.latency_s += latency
        self._notify(True)

    def settle_error(self, r: Reservation, err: BaseException, *, final: bool) -> None:
        """The attempt failed: it still counts as a call (it was sent). A timed-out or
        cancelled attempt keeps its worst-case cost against the cap, as the provider may
        bill it; a cancellation is not a backend failure."""
        with self._lock:
            s = self._release(r)
            if isinstance(err, (BackendTimeout, asyncio.CancelledError)):
                self.unsettled_cost_usd += r.cost_usd
            if not isinstance(err, asyncio.CancelledError):
                name = type(err).__name__
                s.errors[name] = s.errors.get(name, 0) + 1
                if final:
                    s.failures += 1
                else:
                    s.retries += 1
        self._notify(True)

    def record_hit(self, role: str) -> None:
        """Count a cache hit: free, but a report that hid it would misstate the work done."""
        with self._lock:
            self._s(role).cache_hits += 1
        self._notify(False)

    def by_role(self) -> dict[str, dict[str, Any]]:
        """Usage summed over phases per role, as one consistent snapshot (for ``run.json``)."""
        out: dict[str, RoleStats] = {}
        with self._lock:  # a consistent snapshot while other threads settle calls
            for (role, _), s in self.stats.items():
                agg = out.setdefault(role, RoleStats())
                _merge(agg, s)
            return {r: s.to_json() for r, s in sorted(out.items())}

    def by_phase(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Usage per phase, then per role, as one consistent snapshot (for ``run.json``)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        with self._lock:
            for (role, phase), s in sorted(self.stats.items()):
                out.setdefault(phase, {})[role] = s.to_json()
        return out


def _merge(into: RoleStats, s: RoleStats) -> None:
    for name in (
        "calls",
        "cache_hits",
        "failures",
        "retries",
        "prompt_tokens",
        "completion_tokens",
        "cached_prompt_tokens",
    ):
        setattr(into, name, getattr(into, name) + getattr(s, name))
    into.cost_usd += s.cost_usd
    into.latency_s += s.latency_s
    for k, v in s.errors.items():
        into.errors[k] = into.errors.get(k, 0) + v


class RateLimiter:
    """Sliding one-minute window over requests and (estimated) tokens."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._events: deque[tuple[float, int]] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        """Wait until one more request of ``tokens`` fits the last minute's window. A request over
        the token limit on its own goes through alone, rather than waiting forever."""
        if self.rpm is None and self.tpm is None:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._events and now - self._events[0][0] >= 60.0:
                    self._events.popleft()
                n_req = len(self._events)
                n_tok = sum(t for _, t in self._events)
                ok_r = self.rpm is None or n_req + 1 <= self.rpm
                ok_t = self.tpm is None or n_tok + tokens <= self.tpm or n_req == 0
                if ok_r and ok_t:
                    self._events.append((now, tokens))
                    return
                wait = 60.0 - (now - self._events[0][0]) if self._events else 0.05
                await asyncio.sleep(max(wait, 0.01))


Measure = Callable[[Any], tuple[Usage, float, float]]


def _worst_prompt_tokens(messages: Sequence[Message]) -> int:
    """An upper bound on prompt tokens: byte-level BPE and byte-fallback tokenizers never
    emit more tokens than UTF-8 bytes; 16 per message covers the chat template."""
    return sum(len(m.content.encode("utf-8")) + 16 for m in messages)


def _estimate_tokens(messages: Sequence[Message], options: GenOptions) -> int:
    return sum(len(m.content) for m in messages) // 4 + options.max_tokens


class _Retrying:
    """Shared retry loop for chat and embedding calls."""

    def __init__(self, role: str, accountant: Accountant, limits: Limits, seed: int) -> None:
        self.role = role
        self.accountant = accountant
        self.limits = limits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem = asyncio.Semaphore(limits.max_concurrency)
        self._limiter = RateLimiter(limits.requests_per_minute, limits.tokens_per_minute)
        self._rng = random.Random(seed)
        self.in_flight = 0
        self.max_in_flight = 0

    def _delay(self, attempt: int, err: BackendError) -> float:
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            return float(retry_after) + self._rng.uniform(0.0, 0.1)
        base = min(self.limits.backoff_max_s, self.limits.backoff_base_s * (2**attempt))
        return float(base * self._rng.uniform(0.5, 1.0))

    def _bind_loop(self) -> None:
        # asyncio primitives belong to one event loop; a client outlives a loop when the sync
        # API runs fit() and predict() under separate asyncio.run calls.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._sem = asyncio.Semaphore(self.limits.max_concurrency)
            self._limiter = RateLimiter(
                self.limits.requests_per_minute, self.limits.tokens_per_minute
            )

    async def _admit(self, worst_cost: float) -> Reservation:
        """Reserve the call under the caps; wait while calls in flight hold the headroom."""
        while True:
            r = self.accountant.reserve(self.role, worst_cost)
            if r is not None:
                return r
            await _poll_pause()

    async def run(self, call: Any, est_tokens: int, worst_cost: float, measure: Measure) -> Any:
        """Send ``call`` with retries. Every attempt is admitted under the caps inside the
        concurrency-limited section (so queued calls cannot all pass one check) and settled
        with the usage ``measure`` reads from its result."""
        self._bind_loop()
        last: BackendError | None = None
        for attempt in range(self.limits.max_retries + 1):
            self.accountant.check_budget()
            await self._limiter.acquire(est_tokens)
            async with self._sem:
                ticket = await self._admit(worst_cost)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    out = await self._attempt(call)
                except BackendError as e:
                    final = not e.retryable or attempt == self.limits.max_retries
                    self.accountant.settle_error(ticket, e, final=final)
                    if final:
                        if e.retryable:
                            raise type(e)(
                                f"{e} (gave up after {attempt + 1} attempts)",
                                **_err_kwargs(e),
                            ) from e
                        raise
                    last = e
                except BaseException as e:
                    self.accountant.settle_error(ticket, e, final=True)
                    raise
                else:
                    self.accountant.settle(ticket, *measure(out))
                    return out
                finally:
                    self.in_flight -= 1
            delay = self._delay(attempt, last)
            log.info("%s call failed (%s); retry %d in %.2fs", self.role, last, attempt + 1, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, call: Any) -> Any:
        if self.limits.timeout_s is None:
            return await call()
        try:
            return await asyncio.wait_for(call(), self.limits.timeout_s)
        except TimeoutError as e:
            raise BackendTimeout(
                f"the {self.role} call took longer than {self.limits.timeout_s:g}s; raise the "
                "timeout or check the endpoint"
            ) from e


def _honour_a_swallowed_cancel() -> None:
    """Raise the cancel Python 3.11's ``wait_for`` can drop: when the call finishes in the same
    loop step as a cancel of the waiting task (Ctrl-C cancels the run's main task), it returns
    the answer and the cancel is gone, so a stopped run would go on to its end. Called once the
    answer is accounted and cached, so stopping loses nothing that was paid for."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _poll_pause() -> None:
    # a plain timer rather than asyncio.sleep, which tests replace to skip backoff waits
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    handle = loop.call_later(0.01, fut.set_result, None)
    try:
        await fut
    finally:
        handle.cancel()


def _err_kwargs(e: BackendError) -> dict[str, Any]:
    kw: dict[str, Any] = {"status": e.status}
    if hasattr(e, "retry_after"):
        kw["retry_after"] = e.retry_after
    return kw


class MissHandler(Protocol):
    """Consulted on a cache miss before any call is made. Teacher batch mode
    (``pld.batch.BatchCollector``) records the request there and raises ``TeacherDeferred``
    instead of calling the model; returning normally lets the call go ahead."""

    def on_miss(self, key: str, messages: Sequence[Message], options: GenOptions) -> None:
        """Called with the cache key and the request before the model is called. Raise to
        stop the call (batch mode raises ``TeacherDeferred``); return to let it go ahead."""
        ...


class ChatClient:
    """A ``ChatModel`` with cache, limits, retries and accounting around it."""

    def __init__(
        self,
        model: ChatModel,
        *,
        role: str,
        accountant: Accountant | None = None,
        cache: Cache | None = None,
        limits: Limits | None = None,
        price: Price | None = None,
        seed: int = 0,
        on_miss: MissHandler | None = None,
    ) -> None:
        self.model = model
        self.role = role
        self.on_miss = on_miss
        self.accountant = accountant or Accountant()
        self.cache = cache
        self.limits = limits or Limits()
        self.price = price or Price()
        self._retry = _Retrying(role, self.accountant, self.limits, seed)

    @property
    def identity(self) -> str:
        return self.model.identity

    @property
    def max_in_flight(self) -> int:
        """The most calls this client ever had in flight at once: how tests see that concurrency
        really happened and never exceeded the limit."""
        return self._retry.max_in_flight

    def key(self, messages: Sequence[Message], options: GenOptions, sample: int) -> str:
        """The cache key of a request: built from what is asked (model identity, messages, options,
        sample index), never from credentials or endpoints, so a cache file is safe to share."""
        return cache_key(
            {
                "v": CACHE_VERSION,
                "kind": "chat",
                "model": self.model.identity,
                "messages": [m.to_dict() for m in messages],
                "options": options.canonical(),
                "sample": sample,
            }
        )

    async def complete(
        self, messages: Sequence[Message], options: GenOptions, *, sample: int = 0
    ) -> Completion:
        """Answer from the cache when it can; otherwise consult ``on_miss``, then call the model
        under the caps, limits and retries, and cache the answer. ``sample`` tells repeated samples
        of one request apart, so each gets its own cache entry."""
        key = self.key(messages, options, sample)
        if self.cache is not None:
            hit = self.cache.get_completion(key)
            if hit is not None:
                self.accountant.record_hit(self.role)
                return Completion.from_json(hit, cached=True)
        if self.on_miss is not None:
            self.on_miss.on_miss(key, messages, options)

        async def call() -> Completion:
            return await self.model.complete(messages, options)

        def measure(c: Completion) -> tuple[Usage, float, float]:
            return c.usage, c.latency_s, self.price.cost(c.usage)

        worst = self.price.cost(Usage(_worst_prompt_tokens(messages), options.max_tokens))
        comp: Completion = await self._retry.run(
            call, _estimate_tokens(messages, options), worst, measure
        )
        if self.cache is not None:
            self.cache.put_completion(key, comp.to_json())
        _honour_a_swallowed_cancel()
        return comp


class EmbedClient:
    """An ``Embedder`` with a per-text cache, limits, retries and accounting around it."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        role: str = "embedder",
        accountant: Accountant | None = None,
        cache: Cache | None = None,
        limits: Limits | None = None,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.embedder = embedder
        self.role = role
        self.accountant = accountant or Accountant()
        self.cache = cache
        self.limits = limits or Limits()
        self.batch_size = batch_size
        self._retry = _Retrying(role, self.accountant, self.limits, seed)

    @property
    def identity(self) -> str:
        return self.embedder.identity

    def _key(self, text: str) -> str:
        return cache_key(
            {"v": CACHE_VERSION, "kind": "embed", "model": self.embedder.identity, "text": text}
        )

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Vectors for ``texts`` in order: cached ones are reused, the rest are embedded in batches
        of ``batch_size`` under the client's limits and retries, then cached one text at a time."""
        keys = [self._key(t) for t in texts]
        found: dict[int, NDArray[np.float32]] = {}
        if self.cache is not None:
            for i, k in enumerate(keys):
                v = self.cache.get_embedding(k)
                if v is not None:
                    found[i] = v
                    self.accountant.record_hit(self.role)
        missing = [i for i in range(len(texts)) if i not in found]
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start : start + self.batch_size]
            batch = [texts[i] for i in idx]

            async def call(batch: list[str] = batch) -> tuple[NDArray[np.float32], float]:
                t0 = time.perf_counter()
                out = await self.embedder.embed(batch)
                return out, time.perf_counter() - t0

            ntok = sum(len(t) for t in batch) // 4

            def measure(
                out: tuple[NDArray[np.float32], float], ntok: int = ntok
            ) -> tuple[Usage, float, float]:
                return Usage(prompt_tokens=ntok), out[1], 0.0

            vecs, _ = await self._retry.run(call, ntok, 0.0, measure)
            if vecs.shape[0] != len(batch):
                raise BackendError(
                    f"embedder returned {vecs.shape[0]} vectors for {len(batch)} texts"
                )
            for i, v in zip(idx, vecs, strict=True):
                found[i] = np.asarray(v, dtype=np.float32)
            if self.cache is not None:
                self.cache.put_embeddings([(keys[i], found[i]) for i in idx])
            _honour_a_swallowed_cancel()
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[i] for i in range(len(texts))]).astype(np.float32)
