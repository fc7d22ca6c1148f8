"""The one client wrapper: cache, retries, limits, caps, accounting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pld.cache import Cache
from pld.errors import (
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    BudgetExceeded,
    RateLimited,
)
from pld.models.base import GenOptions, Message
from pld.models.client import Accountant, ChatClient, EmbedClient, Limits, Price
from pld.models.fake import HashEmbedder, ScriptedChatModel
from pld.models.openai_compat import OpenAIChatModel

MSG = [Message("user", "hello")]
OPT = GenOptions(max_tokens=8)


@pytest.fixture()
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record backoff sleeps instead of waiting them out."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(d: float) -> None:
        recorded.append(d)
        await real_sleep(0)

    monkeypatch.setattr("pld.models.client.asyncio.sleep", fake_sleep)
    return recorded


async def test_cache_hit_costs_no_call(tmp_path: Path) -> None:
    fake = ScriptedChatModel(["one", "two"])
    acct = Accountant()
    c = ChatClient(fake, role="teacher", accountant=acct, cache=Cache(tmp_path / "c.sqlite"))
    a = await c.complete(MSG, OPT)
    b = await c.complete(MSG, OPT)
    assert (a.text, a.cached) == ("one", False)
    assert (b.text, b.cached) == ("one", True)
    assert len(fake.requests) == 1
    s = acct.by_role()["teacher"]
    assert (s["calls"], s["cache_hits"]) == (1, 1)
    # a different sample index is a different request
    c2 = await c.complete(MSG, OPT, sample=1)
    assert c2.text == "two" and not c2.cached


async def test_cache_survives_a_new_client(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    await ChatClient(ScriptedChatModel(["x"]), role="t", cache=Cache(path)).complete(MSG, OPT)
    fake = ScriptedChatModel([])
    got = await ChatClient(fake, role="t", cache=Cache(path)).complete(MSG, OPT)
    assert got.text == "x" and got.cached and fake.requests == []


def test_cache_key_excludes_secrets_and_base_url(tmp_path: Path) -> None:
    a = OpenAIChatModel("m", base_url="http://127.0.0.1:1/v1", api_key="sk-SECRET-AAA")
    b = OpenAIChatModel("m", base_url="http://127.0.0.1:2/v1", api_key="sk-SECRET-BBB")
    ka = ChatClient(a, role="t").key(MSG, OPT, 0)
    kb = ChatClient(b, role="t").key(MSG, OPT, 0)
    assert ka == kb
    assert "SECRET" not in repr(a) and "SECRET" not in a.identity


async def test_retry_on_429_honours_retry_after(sleeps: list[float]) -> None:
    fake = ScriptedChatModel([RateLimited("slow down", retry_after=7.0), "ok"])
    acct = Accountant()
    c = ChatClient(fake, role="teacher", accountant=acct, limits=Limits(max_retries=3))
    got = await c.complete(MSG, OPT)
    assert got.text == "ok"
    assert len(sleeps) == 1 and 7.0 <= sleeps[0] <= 7.1
    s = acct.by_role()["teacher"]
    assert s["retries"] == 1 and s["errors"] == {"RateLimited": 1} and s["failures"] == 0


async def test_backoff_grows_and_gives_up(sleeps: list[float]) -> None:
    fake = ScriptedChatModel([BackendUnavailable("down")] * 4)
    acct = Accountant()
    c = ChatClient(
        fake, role="s", accountant=acct, limits=Limits(max_retries=3, backoff_base_s=1.0)
    )
    with pytest.raises(BackendUnavailable, match="gave up after 4 attempts"):
        await c.complete(MSG, OPT)
    assert len(sleeps) == 3
    # exponential with jitter in [0.5, 1] x base * 2**k
    for k, d in enumerate(sleeps):
        assert 0.5 * 2**k <= d <= 2**k
    assert acct.by_role()["s"]["failures"] == 1


async def test_4xx_is_not_retried(sleeps: list[float]) -> None:
    fake = ScriptedChatModel([BackendResponseError("bad request", status=400), "never"])
    c = ChatClient(fake, role="s")
    with pytest.raises(BackendResponseError):
        await c.complete(MSG, OPT)
    assert sleeps == [] and len(fake.requests) == 1


async def test_5xx_is_retried(sleeps: list[float]) -> None:
    fake = ScriptedChatModel([BackendResponseError("oops", status=503), "fine"])
    got = await ChatClient(fake, role="s").complete(MSG, OPT)
    assert got.text == "fine" and len(sleeps) == 1


async def test_timeout_enforced() -> None:
    fake = ScriptedChatModel(lambda m, o: "late", delay_s=2.0)
    c = ChatClient(
        fake, role="s", limits=Limits(timeout_s=0.05, max_retries=1, backoff_base_s=0.01)
    )
    with pytest.raises(BackendTimeout):
        await c.complete(MSG, OPT)
    assert len(fake.requests) == 2


async def test_max_calls_cap_stops_cleanly_and_keeps_work(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.sqlite")
    fake = ScriptedChatModel(lambda m, o: "r:" + m[-1].content)
    acct = Accountant(max_calls=3)
    c = ChatClient(fake, role="t", accountant=acct, cache=cache)
    for i in range(3):
        await c.complete([Message("user", str(i))], OPT)
    with pytest.raises(BudgetExceeded, match="max_calls=3"):
        await c.complete([Message("user", "3")], OPT)
    assert len(fake.requests) == 3
    # completed work is kept: a new run with a higher cap re-pays nothing for it
    acct2 = Accountant(max_calls=10)
    c2 = ChatClient(fake, role="t", accountant=acct2, cache=cache)
    for i in range(4):
        await c2.complete([Message("user", str(i))], OPT)
    assert acct2.by_role()["t"]["calls"] == 1 and acct2.by_role()["t"]["cache_hits"] == 3


async def test_cost_cap() -> None:
    fake = ScriptedChatModel(lambda m, o: "word " * 5)
    acct = Accountant(max_cost_usd=0.01)
    c = ChatClient(fake, role="t", accountant=acct, price=Price(0, 1000.0))  # $1e-3 per token
    five = GenOptions(max_tokens=5)  # worst case $0.005 a call
    with pytest.raises(BudgetExceeded, match="max_cost_usd"):
        for i in range(10):
            await c.complete([Message("user", str(i))], five)
    assert acct.total_cost == pytest.approx(0.01)
    assert len(fake.requests) == 2  # 2 calls x 5 tokens x $1e-3 = $0.01


async def _all(coros: list) -> list:  # type: ignore[type-arg]
    return await asyncio.gather(*coros, return_exceptions=True)


async def test_call_cap_holds_under_concurrency() -> None:
    """Issue #11.1: calls queued behind the semaphore all passed the cap check at once."""
    fake = ScriptedChatModel(lambda m, o: "x", delay_s=0.02)
    emb = _SlowEmbedder(8)
    acct = Accountant(max_calls=5)
    c = ChatClient(fake, role="t", accountant=acct, limits=Limits(max_concurrency=4))
    e = EmbedClient(emb, accountant=acct, limits=Limits(max_concurrency=3))
    got = await _all([c.complete([Message("user", str(i))], OPT) for i in range(12)])
    assert len(fake.requests) == 5
    assert sum(isinstance(g, BudgetExceeded) for g in got) == 7
    # the cap is shared: the embedder gets nothing more, and cache hits never count
    got = await _all([e.embed([f"t{i}"]) for i in range(6)])
    assert emb.calls == 0 and all(isinstance(g, BudgetExceeded) for g in got)
    acct2 = Accountant(max_calls=4)
    e2 = EmbedClient(emb, accountant=acct2, limits=Limits(max_concurrency=3))
    got = await _all([e2.embed([f"t{i}"]) for i in range(9)])
    assert emb.calls == 4 and acct2.total_calls == 4


async def test_cost_cap_holds_under_concurrency() -> None:
    """Every call reserves its worst case ($0.005: 5 output tokens at $1e-3) before it is
    sent; real calls cost $0.003. The cap $0.021 admits exactly 6 (the 7th could reach
    $0.023), and calls in flight waiting to settle do not end the run early."""
    fake = ScriptedChatModel(lambda m, o: "w w w", delay_s=0.02)
    acct = Accountant(max_cost_usd=0.021)
    c = ChatClient(
        fake,
        role="t",
        accountant=acct,
        price=Price(0, 1000.0),
        limits=Limits(max_concurrency=4),
    )
    five = GenOptions(max_tokens=5)
    got = await _all([c.complete([Message("user", str(i))], five) for i in range(20)])
    assert len(fake.requests) == 6
    assert acct.total_cost == pytest.approx(0.018) and acct.total_cost <= 0.021
    assert sum(isinstance(g, BudgetExceeded) for g in got) == 14


async def test_cost_cap_counts_prompt_worst_case() -> None:
    """The prompt's worst case (one token per UTF-8 byte) is reserved too: a long prompt at
    a high input price is refused before it is sent."""
    fake = ScriptedChatModel(lambda m, o: "x")
    acct = Accountant(max_cost_usd=0.01)
    c = ChatClient(fake, role="t", accountant=acct, price=Price(1000.0, 0))
    with pytest.raises(BudgetExceeded, match="could cost up to"):
        await c.complete([Message("user", "word " * 10)], OPT)  # 50 bytes > 10 tokens
    assert fake.requests == []


class _SlowEmbedder(HashEmbedder):
    async def embed(self, texts):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.02)
        return await super().embed(texts)


async def test_concurrency_never_exceeds_bound() -> None:
    fake = ScriptedChatModel(lambda m, o: "x", delay_s=0.01)
    c = ChatClient(fake, role="s", limits=Limits(max_concurrency=3))
    await asyncio.gather(*(c.complete([Message("user", str(i))], OPT) for i in range(30)))
    assert fake.max_in_flight == 3
    assert c.max_in_flight == 3


async def test_embed_client_caches_per_text(tmp_path: Path) -> None:
    emb = HashEmbedder(16)
    c = EmbedClient(emb, cache=Cache(tmp_path / "e.sqlite"))
    a = await c.embed(["a b", "c d"])
    b = await c.embed(["c d", "e f"])
    assert a.shape == (2, 16) and b.shape == (2, 16)
    assert (a[1] == b[0]).all()
    assert emb.calls == 2  # second call embedded only "e f"


async def test_rate_limiter_keeps_rpm_under_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A virtual clock: 12 requests at 5 rpm must span >= 2 windows of 60 s."""
    now = [0.0]
    monkeypatch.setattr("pld.models.client.time.monotonic", lambda: now[0])
    real_sleep = asyncio.sleep

    async def advance(d: float) -> None:
        now[0] += d
        await real_sleep(0)

    monkeypatch.setattr("pld.models.client.asyncio.sleep", advance)
    fake = ScriptedChatModel(lambda m, o: "x")
    stamps: list[float] = []
    c = ChatClient(fake, role="s", limits=Limits(requests_per_minute=5))
    for i in range(12):
        await c.complete([Message("user", str(i))], OPT)
        stamps.append(now[0])
    for i in range(len(stamps)):
        in_window = [t for t in stamps if stamps[i] <= t < stamps[i] + 60.0]
        assert len(in_window) <= 5
    assert stamps[-1] >= 120.0


async def test_retries_count_against_the_call_cap(sleeps: list[float]) -> None:
    fake = ScriptedChatModel([BackendUnavailable("down"), BackendUnavailable("down"), "ok"])
    acct = Accountant(max_calls=2)
    c = ChatClient(fake, role="t", accountant=acct, limits=Limits(max_retries=3))
    with pytest.raises(BudgetExceeded, match="max_calls=2"):
        await c.complete(MSG, OPT)
    assert len(fake.requests) == 2 and acct.total_calls == 2


async def test_a_cancel_that_lands_as_the_call_finishes_is_not_lost(tmp_path: Path) -> None:
    """Ctrl-C cancels the run's task; when the model's answer arrives in the same loop step,
    Python 3.11's wait_for returned it and dropped the cancel, so the run went on to its end.
    The cancel must win, and the answer that was paid for must still be counted and cached."""
    caller: list[asyncio.Task[object]] = []

    class AnswersAsItIsCancelled(ScriptedChatModel):
        async def complete(self, messages, options):  # type: ignore[no-untyped-def]
            caller[0].cancel()  # the cancel and the answer in one loop step
            return await super().complete(messages, options)

    acct, cache = Accountant(), Cache(tmp_path / "c.sqlite")
    client = ChatClient(AnswersAsItIsCancelled(["x", "y"]), role="t", accountant=acct, cache=cache)
    assert client.limits.timeout_s is not None  # the wait_for path

    async def call() -> object:
        return await client.complete(MSG, OPT)

    task = asyncio.ensure_future(call())
    caller.append(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert acct.total_calls == 1 and cache.stats()["completions"] == 1
    assert (await ChatClient(ScriptedChatModel([]), role="t", cache=cache).complete(MSG, OPT)).text
