"""The worker's eyes on memory: it builds the data store, samples the process's memory
(its RSS, and the shared pages of its placed results: ``corral.worker.process_memory``)
and turns what it sees into ``MemoryUsage`` stimuli; segments kept for reuse go first
when that is over the spill or pause threshold. What to spill, when to pause and
resume is decided by the state machine (``corral.worker.memory``'s rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import psutil

from corral.comm import frame_memory, shm
from corral.exceptions import BadMemoryLimit
from corral.worker import events as ev
from corral.worker import process_memory
from corral.worker.spill import SpillBuffer

if TYPE_CHECKING:
    from corral.worker.server import Worker

logger = logging.getLogger("corral.worker")


class MemoryWatch:
    TRIM_EVERY = 1.0  # seconds: trimming a large heap costs milliseconds

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.process = psutil.Process()
        # large frames' memory, kept for the next; this worker's share of the cache
        self._frames_share = frame_memory.keep_frames(worker.memory_limit)
        self.grown = 0  # bytes of results since memory was last measured
        self._watched: set[asyncio.Future[Any]] = set()  # spills that end with a new look
        self._trimmed = float("-inf")
        self._trimming = False

    def close(self) -> None:
        """The worker is closing: its share in keeping frames' memory ends."""
        frame_memory.stop_keeping(self._frames_share)

    def new_store(self, local_directory: str) -> dict[Any, Any] | SpillBuffer:
        """A plain dict without a limit; else a store that spills under the directory."""
        w = self.worker
        target = w.thresholds.bytes(w.thresholds.target, w.memory_limit)
        if not w.memory_limit or (target == float("inf") and not w.thresholds.spill):
            return {}
        return SpillBuffer(os.path.join(local_directory, "spill"), target)

    def check_limit(self) -> None:
        """Refuse to start (one line saying why) if this process alone is over its pause
        threshold: it would be paused, or restarted, before it ran anything."""
        w = self.worker
        floor = w.thresholds.bytes(w.thresholds.pause or w.thresholds.terminate, w.memory_limit)
        rss = process_memory.measure(self.process)
        if rss > floor:
            w.gave_up = (f"memory limit {w.memory_limit / 2**20:.0f} MiB is too small: "
                         f"this worker uses {rss / 2**20:.0f} MiB before running anything")
            logger.error("%s", w.gave_up)
            raise BadMemoryLimit(w.gave_up)

    def use(self) -> tuple[int, int, int]:
        """Bytes of managed data in memory, of spilled data (as in memory), on disk."""
        data, state, shards = self.worker.data, self.worker.state, self.worker.shuffles.shards
        if isinstance(data, SpillBuffer):
            return (self._managed(), data.spilled,
                    sum(data.disk.disk_bytes.values()) + shards.on_disk)
        return sum(t.nbytes for t in state.tasks.values()
                   if t.key in data) + shards.in_memory if state else 0, 0, 0

    def _managed(self) -> int:
        """Bytes in memory the worker manages: its store's, and its shuffle pieces'."""
        data = self.worker.data
        return ((data.managed if isinstance(data, SpillBuffer) else 0)
                + self.worker.shuffles.shards.in_memory)

    def measure(self) -> int:
        """The process's memory (``process_memory``), once its caches of segments and
        of frames' memory have been trimmed; emptied if that memory is over the spill or
        pause threshold: kept for speed only, they go before any result is spilled or
        any task waits."""
        w = self.worker
        _trim_idle_caches()
        memory = process_memory.measure(self.process)
        t = w.thresholds
        over = min(t.bytes(t.spill, w.memory_limit), t.bytes(t.pause, w.memory_limit))
        if memory > over and (shm.cached_bytes()[0] or frame_memory.cached_bytes()):
            shm.trim_cache(clear=True)
            frame_memory.trim_cache(clear=True)
            memory = process_memory.measure(self.process)
        return memory

    def metrics(self) -> dict[str, Any]:
        """The memory part of a heartbeat's metrics, and the process's CPU use."""
        w = self.worker
        _trim_idle_caches()  # (a worker without a memory limit measures only here)
        with self.process.oneshot():
            memory = process_memory.measure(self.process)
            cpu = self.process.cpu_percent()
        managed, spilled, spilled_disk = self.use()
        return {
            "memory": memory, "managed": managed, "spilled": spilled,
            "spilled_disk": spilled_disk, "unmanaged": max(memory - managed, 0),
            "paused": bool(w.state and w.state.paused), "memory_limit": w.memory_limit,
            "spilled_total": (w.data.spilled_total if isinstance(w.data, SpillBuffer) else 0)
            + w.shuffles.shards.written_total,
            "cpu": cpu,
        }

    async def monitor(self) -> None:
        """Feed the state machine a memory sample every ``memory_monitor_interval``."""
        while True:
            await asyncio.sleep(self.worker.memory_monitor_interval)
            self.worker.handle(self.sample())

    def after_results(self, stimuli: list[ev.Stimulus]) -> None:
        """Tasks finishing is when memory grows: once results worth 1 % of the limit have
        come in since the last look, look again before the next task starts (tiny tasks
        pay nothing; the monitor looks every monitor-interval anyway)."""
        self.grown += sum(s.nbytes for s in stimuli if isinstance(s, ev.ExecuteSuccess))
        if self.grown > self.worker.memory_limit // 100:
            stimuli.append(self.sample())
            self.watch_spills()

    def watch_spills(self) -> None:
        """Look at memory again as soon as a spill is done, so that a paused worker
        resumes without waiting for the monitor's next look."""
        data = self.worker.data
        if not isinstance(data, SpillBuffer):
            return
        for future in data.evicting:
            if future not in self._watched:
                self._watched.add(future)
                future.add_done_callback(self._after_spill)

    def _after_spill(self, future: asyncio.Future[Any]) -> None:
        self._watched.discard(future)
        w = self.worker
        if w.serving and w.state is not None and w.memory_limit:
            w.handle(self.sample())

    def trim(self) -> None:
        """Give memory freed but kept by the allocators back to the system, on a thread,
        at most once a second; then look at memory again (a paused worker may resume)."""
        now = time.monotonic()
        if self._trimming or now - self._trimmed < self.TRIM_EVERY:
            return
        self._trimming, self._trimmed = True, now

        def done(_: asyncio.Future[None]) -> None:
            self._trimming = False
            self._after_spill(_)

        asyncio.ensure_future(asyncio.to_thread(_release_freed_memory)).add_done_callback(done)

    def sample(self) -> ev.MemoryUsage:
        data = self.worker.data
        self.grown = 0
        return ev.MemoryUsage(
            stimulus_id=self.worker.new_id(), rss=self.measure(),
            managed=self._managed(),
            spill_failed=isinstance(data, SpillBuffer) and data.spill_error is not None)


def _trim_idle_caches() -> None:
    shm.trim_cache()
    frame_memory.trim_cache()


def _release_freed_memory() -> None:
    """glibc keeps freed memory in its heap unless asked (``MALLOC_TRIM_THRESHOLD_``
    only trims its top), and Arrow's allocator keeps some in its pool."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # (musl has no malloc_trim)
            ctypes.CDLL(None).malloc_trim(0)
