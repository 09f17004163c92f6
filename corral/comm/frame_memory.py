"""Private memory for large incoming frames: aligned on huge pages, and used again.

A frame of ``HUGE_PAGE_THRESHOLD`` bytes or more is read into memory of its own
(``framing.allocate_frame``). Filling fresh memory is costly: the kernel zeroes each page
and maps it in on first touch. Measured on a 2-core VM, a 10 MB frame took 1.4 ms to fill
in huge pages, 2.7 times as long at a random offset (the kernel backs only the aligned
2 MiB blocks of a mapping with huge pages), and 4.2 times as long in 4 KiB pages; a
receiver's profile was 30 % zeroing and faults.

So each frame's mapping starts on a huge page boundary, and once what was made of the
frame is gone (the NumPy array, the bytes), the mapping is kept in a cache: the next frame
that fits is read into it, with no fault and no zeroing. Worker-to-worker fetches of
10 MB took a third less time, of 100 MB a seventh.

The frame is handed out as a memoryview of a ctypes array over the mapping; that array's
finalizer gives the mapping back. A mapping serves frames that fill half of it or more;
the part an earlier, larger frame touched beyond the new one is given back to the kernel.
Until overwritten, a reused mapping holds an earlier frame's bytes: only this process's,
and every caller fills a frame before it is read.
Only a process hosting a worker keeps frames (``keep_frames``), up to
``comm.frame-cache`` bytes and an eighth of the worker's memory limit, in its RSS. On a
VM that hands memory left free back to its host, a fresh frame can cost 20 times what a
kept one does (``bench/_fresh_memory.py``); so the cache holds a 500 MB frame too where
the worker's memory allows. A mapping unused for ``IDLE_SECONDS`` is freed when the next
frame comes or goes, or when the worker looks at its memory
(``corral.worker.memory_watch``: every heartbeat at least), which empties the cache
before it would spill or pause. The last worker of the process to close empties it.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import sys
import threading
import time
from typing import Any

from corral import config, utils
from corral.comm.reuse import ReusePool

HUGE_PAGE = 2 * 2**20  # x86-64's and arm64's (4 KiB base pages) transparent huge page
IDLE_SECONDS = 30.0  # a cached mapping unused this long is freed
MEMORY_SHARE = 8  # a worker's cache holds at most 1 / this of its memory limit
_ADVISE = sys.platform == "linux" and hasattr(mmap, "MADV_HUGEPAGE")
_DROP = hasattr(mmap, "MADV_DONTNEED")

stats = {"new_frames": 0, "reused_frames": 0}


class _Mapping:
    """An anonymous mapping of ``capacity`` bytes from its first huge page boundary."""

    __slots__ = ("buffer", "capacity", "start")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer = mmap.mmap(-1, capacity + HUGE_PAGE,
                                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        anchor = ctypes.c_char.from_buffer(self.buffer)
        self.start = -ctypes.addressof(anchor) % HUGE_PAGE
        del anchor  # its export of the buffer
        if _ADVISE:
            self.buffer.madvise(mmap.MADV_HUGEPAGE, self.start, capacity)


class FrameCache:
    """Mappings whose frames are gone, kept for the next frames, up to ``limit`` bytes
    (thread-safe: a frame can be let go of on any thread). A mapping let go of is
    unmapped once nothing exports it any more."""

    def __init__(self, limit: int) -> None:
        self._pool: ReusePool[_Mapping] = ReusePool(limit, lambda m: m.capacity)
        self._array_types: dict[int, Any] = {}  # ctypes array type by capacity
        self._lock = threading.Lock()  # (of the types)

    @property
    def limit(self) -> int:
        return self._pool.limit

    @limit.setter
    def limit(self, limit: int) -> None:
        self._pool.limit = limit

    @property
    def nbytes(self) -> int:
        return self._pool.nbytes

    def frame(self, length: int) -> memoryview:
        """A writable buffer of ``length`` bytes, on a cached mapping if one fits snugly."""
        capacity = -(-length // HUGE_PAGE) * HUGE_PAGE
        mapping = self._pool.take(capacity)
        if mapping is None:
            mapping = _Mapping(capacity)
            stats["new_frames"] += 1
        else:
            stats["reused_frames"] += 1
            if mapping.capacity > capacity and _DROP:
                # An earlier, larger frame's tail: out of the RSS, where nothing would
                # account for it (this frame's value is counted at its own size).
                mapping.buffer.madvise(mmap.MADV_DONTNEED, mapping.start + capacity,
                                       mapping.capacity - capacity)
        with self._lock:
            array_type: Any = self._array_types.get(mapping.capacity)
            if array_type is None:
                array_type = self._array_types[mapping.capacity] = type(
                    "FrameArray", (ctypes.c_ubyte * mapping.capacity,), {"__del__": _give_back})
        array = array_type.from_buffer(mapping.buffer, mapping.start)
        array.mapping, array.cache = mapping, self
        return memoryview(array).cast("B")[:length]

    def put(self, mapping: _Mapping) -> None:
        """Keep ``mapping``, its frame gone; the idle ones go, and the oldest past the
        limit."""
        now = time.monotonic()
        self._pool.trim(now, IDLE_SECONDS)
        self._pool.put(mapping, now)

    def shrink(self) -> None:
        """Free the oldest mappings past the limit, lowered since they were kept."""
        self._pool.shrink()

    def trim(self, clear: bool = False) -> None:
        """Free the mappings unused for ``IDLE_SECONDS``, or all of them."""
        if clear:
            self._pool.clear()
        else:
            self._pool.trim(time.monotonic(), IDLE_SECONDS)


def _give_back(array: Any) -> None:
    """The ``__del__`` of every frame's ctypes array: its mapping goes back to its cache."""
    try:
        array.cache.put(array.mapping)
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


_cache: FrameCache | None = None
_cache_lock = threading.Lock()
_kept: list[int] = []  # what each worker of this process keeps (``keep_frames``)


def cache() -> FrameCache:
    """This process's frame cache: it keeps nothing until ``keep_frames``."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = FrameCache(0)
        return _cache


def keep_frames(memory_limit: int = 0) -> int:
    """Keep frames' memory from now on, up to ``comm.frame-cache`` (and an eighth of
    ``memory_limit``, where there is one): done by each worker of the process, whose
    memory watch trims the cache and empties it under pressure. The cache keeps what the
    largest worker's share allows, and what it kept for a worker is freed with
    ``stop_keeping(share)``, ``share`` being what this returned. A process without a
    worker (a client, a scheduler) would hold that memory with nobody looking, so it
    keeps nothing."""
    share = utils.parse_bytes(config.get("comm.frame-cache"))
    if memory_limit:
        share = min(share, memory_limit // MEMORY_SHARE)
    frames = cache()
    with _cache_lock:
        _kept.append(share)
        frames.limit = max(_kept)
    return share


def stop_keeping(share: int) -> None:
    """A worker of the process is gone: the cache keeps up to the largest share of those
    left (nothing, with none left), and frees the oldest mappings past that."""
    frames = cache()
    with _cache_lock:
        with contextlib.suppress(ValueError):
            _kept.remove(share)
        frames.limit = max(_kept, default=0)
    frames.shrink()


def cached_bytes() -> int:
    return _cache.nbytes if _cache is not None else 0


def trim_cache(clear: bool = False) -> None:
    if _cache is not None:
        _cache.trim(clear)


def frame(length: int) -> Any:
    return cache().frame(length)
