"""``Future``: a handle on a task's result that lives on the cluster.

All futures of one client for one key share a ``FutureState``; the client counts them,
and when the last one is garbage collected the client tells the scheduler it no longer
needs the key, so the data is freed on the workers.

A future pickled (inside an object or a closure a task takes, or a result) travels as
its key and turns into a future of the client where it is unpickled: a task's
``get_client()``, or the client reading it, which tells the scheduler it wants the key
too. The submitting client holds the futures pickled into a task until that task is
done, so the key cannot be freed before the worker holds it in turn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.client.interface import ClientCore

PENDING, FINISHED, ERROR, CANCELLED = "pending", "finished", "error", "cancelled"


class FutureState:
    """What one client knows about one key."""

    __slots__ = (
        "callbacks",
        "event",
        "exception",
        "held",
        "nbytes",
        "pickled",
        "status",
        "sync_event",
        "traceback_text",
        "typename",
        "who_has",
    )

    def __init__(self) -> None:
        self.status = PENDING
        self.who_has: tuple[str, ...] = ()
        self.nbytes = 0
        self.typename = ""
        self.exception: BaseException | None = None
        self.traceback_text = ""
        # Made on first use: most futures are gathered, never awaited one by one, and an
        # idle Event (with its deque) costs ~1 KB — more than the rest of the state.
        self.event: asyncio.Event | None = None
        self.callbacks: list[Callable[[], None]] | None = None
        self.held: list[Future] | None = None  # pickled into the task: kept till it is done
        # A synchronous caller's wait (``wait_sync``), set from the loop when done.
        self.sync_event: threading.Event | None = None
        self.pickled: bytes | None = None  # the result, if it came with the report

    def finish(self, who_has: tuple[str, ...], nbytes: int = 0, typename: str = "",
               pickled: bytes | None = None) -> None:
        # status last: another thread (``wait_sync``) that sees it finished reads the rest
        self.who_has, self.nbytes, self.typename = who_has, nbytes, typename
        self.pickled = pickled
        self.exception = None
        self.status = FINISHED
        self._done()

    def fail(self, exception: BaseException, traceback_text: str = "") -> None:
        self.exception, self.traceback_text = exception, traceback_text
        self.status = ERROR
        self._done()

    def cancel(self, reason: str = "cancelled") -> None:
        if self.status == PENDING:
            self.status = CANCELLED
            self.exception = asyncio.CancelledError(reason)
            self._done()

    def lose(self, reason: str) -> None:
        """Cancelled, whatever it was: its task and data are gone (``client.restart()``)."""
        from corral.exceptions import FutureCancelledError

        self.status, self.who_has = CANCELLED, ()
        self.exception = FutureCancelledError(reason)
        self._done()

    def reset(self) -> None:
        """Back to pending, e.g. when the only copy of the data was lost and is recomputed."""
        self.status = PENDING
        self.pickled = None
        if self.event is not None:
            self.event.clear()
        if self.sync_event is not None:
            self.sync_event.clear()

    async def wait(self) -> None:
        while self.status == PENDING:
            if self.event is None:
                self.event = asyncio.Event()
            await self.event.wait()

    def wait_sync(self, timeout: float | None) -> bool:
        """From a thread other than the loop's: wait until done (True) or ``timeout``
        seconds (False). The loop sets a ``threading.Event``: one wake-up of the caller,
        where running a coroutine on the loop would cost a round trip through it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status == PENDING:
            event = self.sync_event
            if event is None:
                event = self.sync_event = threading.Event()
                if self.status != PENDING:  # done before the loop could see the event
                    break
            left = None if deadline is None else deadline - time.monotonic()
            if not event.wait(left) and self.status == PENDING:
                return False
            if self.status == PENDING:  # reset meanwhile (lost data, recomputed)
                event.clear()
        return True

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when this key is done: at once if it already is."""
        if self.status != PENDING:
            callback()
            return
        if self.callbacks is None:
            self.callbacks = []
        self.callbacks.append(callback)

    def hold(self, futures: list[Future]) -> None:
        """Keep ``futures`` (pickled into this key's task) until the task is done."""
        if self.status == PENDING:
            self.held = [*(self.held or ()), *futures]

    def _done(self) -> None:
        self.held = None
        if self.event is not None:
            self.event.set()
        if self.sync_event is not None:
            self.sync_event.set()
        callbacks, self.callbacks = self.callbacks, None
        for callback in callbacks or ():
            callback()


class Future:
    """A task's result on the cluster: ``result()``, ``await future``, ``done()``, ..."""

    __slots__ = ("__weakref__", "_released", "_state", "client", "key")
    # dask's graphs take an object with this as a reference to the task named .key: a
    # future inside a graph (delayed(f)(future), a persisted collection) is a dependency.
    __dask_future__ = True

    def __dask_tokenize__(self) -> object:
        return ("corral.Future", self.key)

    def __init__(self, key: Hashable, client: ClientCore) -> None:
        self.key = key
        self.client = client
        self._state = client.acquire_key(key)
        self._released = False

    @property
    def status(self) -> str:
        return self._state.status

    @property
    def type(self) -> type | None:
        """The class of the result, once finished: looked up by its name among the
        modules this process has imported (never unpickled); None before, or if the
        client has not imported the class's module."""
        return _loaded_class(self._state.typename)

    def done(self) -> bool:
        return self._state.status != PENDING

    def cancelled(self) -> bool:
        """True once the future is cancelled (by ``cancel()``, a restart, or its client
        closing)."""
        return self._state.status == CANCELLED

    def retry(self) -> None:
        """Run a failed task again (and the failed inputs it needs); see ``Client.retry``."""
        if self._on_loop():
            self.client.retry_soon([self])
        else:  # pending again before this returns: a result() waiting here must see it
            self.client.blocking(self._retry_async(), None, "retry")

    async def _retry_async(self) -> None:
        self.client.retry_soon([self])  # on the loop: the states reset at once

    def _on_loop(self) -> bool:
        """Whether this call must go through the client's loop (asynchronous client, the
        loop's own thread, or a closed client) rather than wait in the caller's thread."""
        runner = self.client.runner
        return runner is None or runner.in_loop_thread() or self.client.closed

    async def _wait(self) -> None:
        """Wait until done; a client closed before or meanwhile raises ``ClientClosedError``
        (closing cancels its futures: that is not the task's outcome)."""
        self.client.check_open()
        await self._state.wait()
        self.client.check_open()

    async def _result_async(self) -> Any:
        await self._wait()
        if self._state.status != FINISHED:
            raise self._state.exception  # type: ignore[misc]
        pickled = self._state.pickled
        if pickled is not None:
            return self._unpickle(pickled)
        return (await self.client.gather_keys([self.key]))[self.key]

    def _unpickle(self, pickled: bytes) -> Any:
        """The result that came with the report; futures inside become this client's."""
        from corral.protocol import loads_pickle

        token = reading_client.set(self.client)
        try:
            return loads_pickle(pickled)
        finally:
            reading_client.reset(token)

    async def _exception_async(self) -> BaseException | None:
        await self._wait()
        return self._state.exception

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result_async().__await__()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task and return its value, or raise its exception."""
        if self._on_loop():
            return self.client.blocking(self._result_async(), timeout, self._waiting_for)
        # A synchronous client: wait in this thread; the loop only fetches the value.
        start = time.monotonic()
        if not self._state.wait_sync(timeout):
            raise TimeoutError(f"{self._waiting_for} timed out after {timeout:g} s")
        self.client.check_open()  # closing cancelled it: say so
        if self._state.status != FINISHED:
            error = self._state.exception
            if isinstance(error, asyncio.CancelledError):  # what the loop's way raises
                raise concurrent.futures.CancelledError(*error.args)
            raise error  # type: ignore[misc]
        pickled = self._state.pickled
        if pickled is not None:  # came with the report: no fetch, not even a loop hop
            return self._unpickle(pickled)
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        return self.client.blocking(self._result_async(), left, self._waiting_for)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the task; its exception, or None if it succeeded."""
        return self.client.blocking(self._exception_async(), timeout, self._waiting_for)

    def traceback(self, timeout: float | None = None) -> str | None:
        """The remote traceback of a failed task, as text (traceback objects cannot travel)."""
        self.client.blocking(self._wait(), timeout, self._waiting_for)
        return self._state.traceback_text or None

    @property
    def _waiting_for(self) -> str:
        return f"waiting for key {self.key!r}"

    def cancel(self) -> None:
        self.client.cancel_soon([self])

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` once the future is done (at once if it already is)."""
        self.client.add_done_callback(self, fn)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.client.release_key(self.key)

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: nothing left to tell
            pass

    def __reduce__(self) -> Any:
        pickled = _pickled.get()
        if pickled is not None:
            pickled.append(self)
        return (_unpickle, (self.key,))

    def __repr__(self) -> str:
        extra = f", type: {self._state.typename}" if self._state.typename else ""
        return f"<Future: {self.status}{extra}, key: {self.key}>"


class Finished:
    """Futures as they finish, collected by a callback on each one's state.

    Waiting on many futures this way costs O(1) per future that finishes, where a task
    per future (``asyncio.wait`` over ``_wait()``) costs O(n) on every wake-up. Use it on
    the client's loop, where states finish. The callbacks hold the futures and this
    object weakly: a wait given up (a timeout, the first of many done) does not keep
    the futures it watched, so dropping them still releases their tasks.
    """

    def __init__(self, futures: Iterable[Future]) -> None:
        self._batch: list[Future] = []
        self._event = asyncio.Event()
        self.pending = 0
        on_finish = weakref.WeakMethod(self._finished)
        for future in futures:
            self.pending += 1
            future._state.add_callback(partial(_notify, on_finish, weakref.ref(future)))

    def _finished(self, future: Future | None) -> None:
        self.pending -= 1
        if future is not None:
            self._batch.append(future)
        self._event.set()

    async def next_batch(self) -> list[Future]:
        """The futures done since the last call (those done already, the first time),
        waiting for one if there are none; empty only when none is pending."""
        while not self._batch and self.pending:
            self._event.clear()
            await self._event.wait()
        batch, self._batch = self._batch, []
        return batch

    async def wait_all(self) -> None:
        """Return once every future is done."""
        while self.pending:
            await self.next_batch()


def _notify(on_finish: weakref.WeakMethod[Any], future: weakref.ref[Future]) -> None:
    finished = on_finish()
    if finished is not None:
        finished(future())


# -- travelling -----------------------------------------------------------------------------

# While a client packs a task: the futures pickled into it (``pickled_futures``).
_pickled: ContextVar[list[Future] | None] = ContextVar("corral_pickled", default=None)
# While a client reads data (``gather``): the client that futures inside it belong to.
reading_client: ContextVar[ClientCore | None] = ContextVar("corral_reading", default=None)


@contextlib.contextmanager
def pickled_futures() -> Iterator[list[Future]]:
    """Collect the futures pickled inside the block (into a task's run_spec)."""
    found: list[Future] = []
    token = _pickled.set(found)
    try:
        yield found
    finally:
        _pickled.reset(token)


def _unpickle(key: Hashable) -> Future:
    """A pickled future, arriving: a future of the client at hand, or bound on first use."""
    client = reading_client.get()
    if client is None:
        from corral.client.worker_client import client_in_task

        client = client_in_task()
    if client is None:
        return LateFuture(key)
    return client.adopt(key)


class LateFuture(Future):
    """A future unpickled where no client was at hand (a worker's event loop reading a
    peer's data, say): it joins ``corral.get_client()`` when first used."""

    __slots__ = ()

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self._released = False

    def __getattr__(self, name: str) -> Any:  # only for the slots not yet set
        if name not in ("client", "_state"):
            raise AttributeError(name)
        from corral.client.worker_client import get_client

        bound = get_client().core.adopt(self.key)
        self.client, self._state = bound.client, bound._state
        bound._released = True  # its reference is ours now
        return getattr(self, name)

    def release(self) -> None:
        with contextlib.suppress(AttributeError):
            object.__getattribute__(self, "client")
            super().release()
            return
        self._released = True  # never bound: nothing to give back

    def __repr__(self) -> str:
        try:
            object.__getattribute__(self, "client")
        except AttributeError:
            return f"<Future: not bound to a client yet, key: {self.key}>"
        return super().__repr__()


def _loaded_class(name: str) -> type | None:
    """The class named ``module.Qual.Name`` (or a builtin's bare name), if its module is
    imported here already."""
    if not name:
        return None
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        module = sys.modules.get(".".join(parts[:cut]) if cut else "builtins")
        if module is None:
            continue
        found: Any = module
        for attr in parts[cut:]:
            found = getattr(found, attr, None)
        return found if isinstance(found, type) else None
    return None
