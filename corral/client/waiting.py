"""``wait`` and ``as_completed`` over futures, for sync and async clients alike.

Which of the two a call is follows the futures' client: with an ``AsyncClient``,
``wait`` returns a coroutine and ``as_completed`` is iterated with ``async for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
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
    client.check_open()
    coro = _wait_async(futures, timeout, return_when)
    if client.runner is None:
        return coro
    return client.blocking(coro, None)


class as_completed:
    """Iterate futures as they finish: ``for f in as_completed(fs)`` / ``async for``.

    With ``with_results=True`` yields ``(future, result)`` pairs. More futures may join
    while iterating (``add``, ``update``); ``batches()`` yields lists of all the futures
    done since the last one (``next_batch``); ``count()`` says how many are still to come.
    """

    def __init__(self, futures: Iterable[Future] = (), with_results: bool = False) -> None:
        self.futures: list[Future] = []
        self.with_results = with_results
        self._queue: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._remaining = 0  # added and not yet yielded
        self._arrival: asyncio.Event | None = None  # made by ``async for``
        self.update(futures)

    def add(self, future: Future) -> None:
        """One more future to yield once it is done."""
        with self._lock:
            self._remaining += 1
            self.futures.append(future)
        future.add_done_callback(self._arrived)

    def update(self, futures: Iterable[Future]) -> None:
        """More futures to yield once they are done."""
        for future in futures:
            self.add(future)

    def count(self) -> int:
        """Futures added and not yet yielded (done or not)."""
        return self._remaining

    def is_empty(self) -> bool:
        return self._remaining == 0

    def has_ready(self) -> bool:
        """Whether a done future waits to be yielded."""
        return not self._queue.empty()

    def _arrived(self, future: Future) -> None:
        self._queue.put(future)
        if self._arrival is not None:  # asynchronous clients call this on their loop
            self._arrival.set()

    def _taken(self, futures: list[Future]) -> list[Any]:
        with self._lock:
            self._remaining -= len(futures)
        if not self.with_results:
            return futures
        return [(f, f.result()) for f in futures]

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if not self._remaining:
            raise StopIteration
        return self._taken([self._queue.get()])[0]

    def next_batch(self, block: bool = True) -> list[Any]:
        """Every future done and not yet yielded; with ``block``, waits for one if none
        is (an empty list only once none is left)."""
        batch = []
        if block and self._remaining:
            batch.append(self._queue.get())
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._queue.get_nowait())
        return self._taken(batch)

    def batches(self) -> Iterator[list[Any]]:
        """``next_batch()`` until no future is left."""
        while self._remaining:
            yield self.next_batch()

    def __aiter__(self) -> as_completed:
        if self._arrival is None:
            self._arrival = asyncio.Event()
        return self

    async def __anext__(self) -> Any:
        assert self._arrival is not None
        while self._remaining:
            try:
                future = self._queue.get_nowait()
            except queue.Empty:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            with self._lock:
                self._remaining -= 1
            return (future, await future) if self.with_results else future
        raise StopAsyncIteration
