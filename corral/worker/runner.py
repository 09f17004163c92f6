"""Threads that run tasks, reporting back to the event loop in batches.

A task's function runs on one of ``nthreads`` threads; results are collected in a
deque and handed to the loop with one wake-up however many finished meanwhile, so a
burst of tiny tasks does not cost one loop wake-up each.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Outcome:
    key: Any
    ok: bool
    value: Any  # the result, or the exception
    traceback_text: str
    start: float
    stop: float


class TaskRunner:
    def __init__(
        self,
        nthreads: int,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[Outcome]], None],
        name: str = "corral-task",
    ) -> None:
        self._loop = loop
        self._on_done = on_done
        self._queue: queue.SimpleQueue[tuple[Any, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._done: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(nthreads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Any, fn: Callable[[], Any]) -> None:
        self._queue.put((key, fn))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            key, fn = item
            start = time.time()
            try:
                outcome = Outcome(key, True, fn(), "", start, time.time())
            except BaseException as e:  # the task's own failure, reported to its future
                tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                outcome = Outcome(key, False, e, tb, start, time.time())
            with self._lock:
                self._done.append(outcome)
                first = len(self._done) == 1
            if first and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # loop closed meanwhile
                    return

    def _deliver(self) -> None:
        with self._lock:
            outcomes = list(self._done)
            self._done.clear()
        if outcomes:
            self._on_done(outcomes)

    def shutdown(self, wait: bool = False, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            deadline = time.monotonic() + timeout
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
