"""Small helpers shared across layers."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_NUMBER = r"\d+(?:\.\d*)?(?:e\d+)?|\.\d+"


def parse_bytes(text: str | float) -> int:
    """``'4GiB'`` → 4294967296; ``'1.5 GB'`` → 1500000000; ``'1e9'``, ``1e9`` → 1000000000."""
    if isinstance(text, int | float):
        return int(text)
    match = re.fullmatch(rf"\s*({_NUMBER})\s*([a-zA-Z]*)\s*", text.replace("_", ""), re.I)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 4GiB or 500MB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's where it is installed (it is faster), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh loop from ``new_event_loop``."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


class LoopRunner:
    """An event loop running in a daemon thread: the home of the synchronous facades.

    ``run(coro)`` blocks the calling thread until the coroutine finishes on the loop;
    calling it from the loop's own thread would deadlock, so that raises instead.

    ``LoopRunner.shared()`` is the one loop that a process's synchronous clients and
    clusters share (dask shares one too): a client and the scheduler of a ``LocalCluster``
    in its process then hand messages over on one thread, not between two threads that
    wake each other and take turns at the GIL. ``release()`` once per ``shared()``; the
    last one stops it.
    """

    _shared: LoopRunner | None = None
    _shared_lock = threading.Lock()

    def __init__(self, name: str = "corral-loop") -> None:
        self.loop = new_event_loop()
        self._users = 0
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def shared(cls) -> LoopRunner:
        """This process's shared loop, started if need be; ``release()`` it when done."""
        with cls._shared_lock:
            runner = cls._shared
            if runner is None or runner.loop.is_closed() or not runner._thread.is_alive():
                runner = cls._shared = cls("corral-loop")
            runner._users += 1
            return runner

    def release(self) -> None:
        """One user of ``shared()`` is done; the last one stops the loop."""
        with self._shared_lock:
            self._users -= 1
            last = self._users <= 0
            if last and LoopRunner._shared is self:
                LoopRunner._shared = None
        if last:
            self.stop()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "this blocking call would deadlock the event loop it runs on; "
                "use the asynchronous API (await) inside async code"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except (TimeoutError, KeyboardInterrupt):  # Ctrl-C lands here, not on the loop
            future.cancel()
            raise

    def call_soon(self, fn: Any, *args: Any) -> None:
        """Schedule ``fn(*args)`` on the loop from any thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Cancel what still runs on the loop, then stop and close it."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            try:
                self.run(_cancel_other_tasks(), timeout=10)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


def _forget_shared_loop() -> None:  # a forked child has the object but not the thread
    LoopRunner._shared = None
    LoopRunner._shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_loop)


def close_at_exit(obj: Any) -> Callable[[], None]:
    """Call ``obj.close()`` when the interpreter exits, if it is still around: a program
    that ends (or that Ctrl-C ends) without closing a client or cluster still says goodbye.
    Hooks run newest first, so a client closes before the cluster it was made from.
    Returns the hook, for ``atexit.unregister`` once ``obj`` is closed."""
    ref = weakref.ref(obj)

    def hook() -> None:
        target = ref()
        if target is not None:
            with contextlib.suppress(Exception, KeyboardInterrupt):  # a 2nd Ctrl-C: give up
                target.close()

    atexit.register(hook)
    return hook


def running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _cancel_other_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def with_timeout(coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
    """``await coro``, or ``TimeoutError("<what> timed out after <timeout> s")``."""
    if timeout is None:
        return await coro
    try:
        async with asyncio.timeout(timeout) as deadline:
            return await coro
    except TimeoutError:
        if deadline.expired():  # ours, not one raised inside (a connect timeout, say)
            raise TimeoutError(f"{what} timed out after {timeout:g} s") from None
        raise
