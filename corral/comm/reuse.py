"""Memory kept to be used again: the bookkeeping shared by the cache of shared memory
segments (``segments.SegmentCache``) and that of large frames' private memory
(``frame_memory.FrameCache``).

A ``ReusePool`` holds things of a size in bytes, up to a limit in all; the oldest go past
it. A request takes the smallest thing that fits it snugly (its size, up to twice that),
so small requests never pin large memory. Things unused for a while go when trimmed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReusePool(Generic[T]):
    """Things kept for reuse, up to ``limit`` bytes (thread-safe: they come back on any
    thread). ``drop`` is called, outside the lock, on each thing let go."""

    def __init__(self, limit: int, size: Callable[[T], int],
                 drop: Callable[[T], None] = lambda _: None) -> None:
        self.limit = limit
        self._size = size
        self._drop = drop
        self._free: list[tuple[T, float]] = []  # (thing, unused since), oldest first
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(self._size(thing) for thing, _ in self._free)

    def things(self) -> list[T]:
        with self._lock:
            return [thing for thing, _ in self._free]

    def take(self, nbytes: int) -> T | None:
        """The smallest thing of ``nbytes`` to twice that, no longer kept; None if none."""
        with self._lock:
            fits = [i for i, (thing, _) in enumerate(self._free)
                    if nbytes <= self._size(thing) <= 2 * nbytes]
            if not fits:
                return None
            best = min(fits, key=lambda i: self._size(self._free[i][0]))
            return self._free.pop(best)[0]

    def put(self, thing: T, now: float) -> None:
        """Keep ``thing``, unused from ``now``; the oldest go past the limit."""
        with self._lock:
            self._free.append((thing, now))
            dropped = self._past_limit()
        for old in dropped:
            self._drop(old)

    def shrink(self) -> None:
        """Let go of the oldest things past the limit (lowered since they were kept)."""
        with self._lock:
            dropped = self._past_limit()
        for old in dropped:
            self._drop(old)

    def _past_limit(self) -> list[T]:
        dropped = []
        while self._free and sum(self._size(t) for t, _ in self._free) > self.limit:
            dropped.append(self._free.pop(0)[0])
        return dropped

    def trim(self, now: float, idle: float) -> None:
        """Let go of the things unused for ``idle`` seconds by ``now``."""
        with self._lock:
            old = [thing for thing, since in self._free if now - since >= idle]
            self._free = [(thing, since) for thing, since in self._free if now - since < idle]
        for thing in old:
            self._drop(thing)

    def clear(self) -> None:
        with self._lock:
            old, self._free = self._free, []
        for thing, _ in old:
            self._drop(thing)
