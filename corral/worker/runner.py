"""Threads that run tasks, reporting back to the event loop in batches.

A task's function runs on one of ``nthreads`` threads; results are collected in a
deque and handed to the loop with one wake-up however many finished meanwhile, so a
burst of tiny tasks does not cost one loop wake-up each.

A task may leave the pool (``secede``, from its own thread): a new thread takes its
place, and the task's thread ends once the task does. Which task runs when is the state
machine's business; this only keeps ``nthreads`` threads taking work.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_local = threading.local()  # .runner: the runner whose pool this thread belongs to

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
        self._name = name
        self._count = itertools.count()
        self._threads: list[threading.Thread] = []
        for _ in range(nthreads):
            self._add_thread()

    def _add_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self._name}-{next(self._count)}",
                                  daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def secede(self) -> bool:
        """From a task's thread: leave the pool (a new thread takes this one's place) and
        end once this task is done. False if this thread is not in the pool (any more)."""
        thread = threading.current_thread()
        with self._lock:
            if getattr(_local, "runner", None) is not self or thread not in self._threads:
                return False
            self._threads.remove(thread)
        self._add_thread()
        return True

    def submit(self, key: Any, fn: Callable[[], Any]) -> None:
        self._queue.put((key, fn))

    def _work(self) -> None:
        _local.runner = self
        me = threading.current_thread()
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
            if me not in self._threads:  # seceded: its replacement takes the work
                return

    def _deliver(self) -> None:
        with self._lock:
            outcomes = list(self._done)
            self._done.clear()
        if outcomes:
            self._on_done(outcomes)

    def shutdown(self, wait: bool = False, timeout: float = 5.0) -> None:
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            deadline = time.monotonic() + timeout
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))


def leave_pool() -> None:
    """From a task's thread: leave its runner's pool (``TaskRunner.secede``)."""
    pool: TaskRunner | None = getattr(_local, "runner", None)
    if pool is not None:
        pool.secede()


def in_pool() -> bool:
    """Whether this thread takes work from a runner's pool (False once seceded)."""
    pool: TaskRunner | None = getattr(_local, "runner", None)
    return pool is not None and threading.current_thread() in pool._threads
