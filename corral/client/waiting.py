"""``wait`` and ``as_completed`` over futures, for sync and async clients alike.

Which of the two a call is follows the futures' client: with an ``AsyncClient``,
``wait`` returns a coroutine and ``as_completed`` is iterated with ``async for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, NamedTuple

from corral.client.future import Finished, Future

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
    finished = Finished(futures)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while finished.pending:
                batch = await finished.next_batch()
                if return_when == FIRST_COMPLETED or (
                    return_when == FIRST_EXCEPTION and any(f.status == "error" for f in batch)
                ):
                    break
    return DoneAndNotDone({f for f in futures if f.done()}, {f for f in futures if not f.done()})


def wait(
    futures: Iterable[Future] | Future | Any,
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
) -> Any:
    """Wait until futures (or a persisted dask collection's) are done;
    ``(done, not_done)``. Does not raise on timeout."""
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError(f"unknown return_when {return_when!r}")
    futures = [futures] if isinstance(futures, Future) else _futures_in(futures)
    if not futures:
        return DoneAndNotDone(set(), set())
    client = futures[0].client
    client.check_open()
    coro = _wait_async(futures, timeout, return_when)
    if client.runner is None:
        return coro
    return client.blocking(coro, None)


def _futures_in(futures: Any) -> list[Future]:
    """The futures given, or those a persisted dask collection holds (``wait(x)``)."""
    if hasattr(futures, "__dask_graph__"):
        from corral.client.persist import futures_of

        return futures_of(futures)
    return list(futures)


class as_completed:
    """Iterate futures as they finish: ``for f in as_completed(fs)`` / ``async for``.

    With ``with_results=True`` yields ``(future, result)`` pairs.
    """

    def __init__(self, futures: Iterable[Future], with_results: bool = False) -> None:
        self.futures = list(futures)
        self.with_results = with_results
        self._queue: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self._remaining = len(self.futures)
        self._arrival: asyncio.Event | None = None  # made by ``async for``
        for future in self.futures:
            future.add_done_callback(self._arrived)

    def _arrived(self, future: Future) -> None:
        self._queue.put(future)
        if self._arrival is not None:  # asynchronous clients call this on their loop
            self._arrival.set()

    def __iter__(self) -> Iterator[Any]:
        while self._remaining:
            future = self._queue.get()
            self._remaining -= 1
            yield (future, future.result()) if self.with_results else future

    async def __aiter__(self) -> AsyncIterator[Any]:
        self._arrival = asyncio.Event()
        while self._remaining:
            try:
                future = self._queue.get_nowait()
            except queue.Empty:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            self._remaining -= 1
            yield (future, await future) if self.with_results else future
