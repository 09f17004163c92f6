"""``wait`` and ``as_completed`` over futures, for sync and async clients alike.

Which of the two a call is follows the futures' client: with an ``AsyncClient``,
``wait`` returns a coroutine and ``as_completed`` is iterated with ``async for``.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, NamedTuple

from corral.client.future import Future

FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED = (
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
)


class DoneAndNotDone(NamedTuple):
    done: set[Future]
    not_done: set[Future]


async def _wait_async(
    futures: list[Future], timeout: float | None, return_when: str
) -> DoneAndNotDone:
    pending = {asyncio.ensure_future(f._wait()): f for f in futures if not f.done()}

    def finished() -> bool:
        done = [f for f in futures if f.done()]
        if return_when == FIRST_COMPLETED:
            return bool(done)
        if return_when == FIRST_EXCEPTION:
            return any(f.status == "error" for f in done) or len(done) == len(futures)
        return len(done) == len(futures)

    try:
        async with asyncio.timeout(timeout):
            while pending and not finished():
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    pending.pop(task)
    except TimeoutError:
        pass
    finally:
        for task in pending:
            task.cancel()
    return DoneAndNotDone({f for f in futures if f.done()}, {f for f in futures if not f.done()})


def wait(
    futures: Iterable[Future] | Future,
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
) -> Any:
    """Wait until futures are done; ``(done, not_done)``. Does not raise on timeout."""
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError(f"unknown return_when {return_when!r}")
    futures = [futures] if isinstance(futures, Future) else list(futures)
    if not futures:
        return DoneAndNotDone(set(), set())
    client = futures[0].client
    coro = _wait_async(futures, timeout, return_when)
    if client._runner is None:
        return coro
    return client._runner.run(coro)


class as_completed:
    """Iterate futures as they finish: ``for f in as_completed(fs)`` / ``async for``.

    With ``with_results=True`` yields ``(future, result)`` pairs.
    """

    def __init__(self, futures: Iterable[Future], with_results: bool = False) -> None:
        self.futures = list(futures)
        self.with_results = with_results
        self._queue: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self._remaining = len(self.futures)
        for future in self.futures:
            future.add_done_callback(self._queue.put)

    def __iter__(self) -> Iterator[Any]:
        while self._remaining:
            future = self._queue.get()
            self._remaining -= 1
            yield (future, future.result()) if self.with_results else future

    async def __aiter__(self) -> AsyncIterator[Any]:
        while self._remaining:
            try:
                future = self._queue.get_nowait()
            except queue.Empty:
                await _any_done(self.futures)  # its done callback fills the queue
                continue
            self._remaining -= 1
            yield (future, await future) if self.with_results else future


async def _any_done(futures: list[Future]) -> None:
    pending = [asyncio.ensure_future(f._wait()) for f in futures if not f.done()]
    if not pending:
        await asyncio.sleep(0)  # callbacks of futures already done are on their way
        return
    _, rest = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    for task in rest:
        task.cancel()
