"""Small asyncio helpers shared by the phases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

from pld.errors import TeacherDeferred

T = TypeVar("T")


async def gather_all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``asyncio.gather``, but when one call fails the others finish first, so every
    completed call reaches the cache before the error propagates (resume re-pays nothing).

    In teacher batch mode every item gets to record its deferred request before the phase
    stops; a real failure outranks a deferral so it is never hidden behind "batch pending"."""
    done = await asyncio.gather(*coros, return_exceptions=True)
    errors = [d for d in done if isinstance(d, BaseException)]
    if errors:
        real = [e for e in errors if not isinstance(e, TeacherDeferred)]
        raise (real or errors)[0]
    return list(done)  # type: ignore[arg-type]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code; refuses inside a running loop (use the
    ``a``-prefixed async method there)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError("called a blocking pld method inside an event loop; await the async one")
