"""``Executor``: the standard library's ``concurrent.futures.Executor`` on a corral cluster.

A thin layer over the synchronous ``Client``: ``submit`` and ``map`` hand work to the
client, and each corral ``Future`` gets a ``concurrent.futures.Future`` twin. Results
that arrive together are fetched together, and the twins are settled on the client's
callback thread, never on its event loop. The callbacks users add to the twins run
there too: they may submit work, but (as with a one-thread ``ThreadPoolExecutor``) must
not wait for another twin, which that thread would settle. Cancelling a twin that is
still pending cancels its task.

The scheduler tells the executor's client when each call's task starts on a worker: the
twin is then running, and ``cancel()`` returns False. ``cancel()`` cannot wait, so until
that report arrives (a few milliseconds after the start) it still succeeds, and a call
that has just begun runs on, its result dropped. ``shutdown(cancel_futures=True)`` can
wait: it has the workers decide, and cancels exactly the calls that had not started.
Like the standard pools, pending calls finish before the interpreter exits, whether or
not the executor was shut down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import concurrent.futures.thread  # noqa: F401  (its exit hook must be registered before ours)
import contextlib
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from corral.client.client import AsyncClient
from corral.client.future import FINISHED, Future
from corral.client.sync import Client
from corral.client.tasks import task_options

if TYPE_CHECKING:
    from corral.deploy import Cluster, LocalCluster

_OPTIONS = task_options(None, False, 0, 0, None)  # every call: default placement

class Executor(cf.Executor):
    """A ``concurrent.futures.Executor`` that runs calls on a corral cluster.

    ``Executor(address)``, ``Executor(cluster)`` or ``Executor()`` (a ``LocalCluster``
    of its own) start a ``Client`` that ``shutdown`` closes; extra keywords go to that
    ``Client``. ``Executor(client)`` uses an existing ``Client`` and leaves it open.
    Every call runs anew (tasks are submitted with ``pure=False``).
    """

    def __init__(
        self, address: str | Client | LocalCluster | Cluster | None = None, **client_options: Any
    ) -> None:
        if isinstance(address, AsyncClient):
            raise TypeError("Executor needs a synchronous Client, not an asynchronous one")
        if isinstance(address, Client):
            if client_options:
                raise TypeError("client options cannot be applied to an existing Client")
            self._client, self._owns_client = address, False
        else:
            # Not dask's default scheduler: an executor is not a dask session.
            options = {"set_as_default": False, **client_options}
            self._client, self._owns_client = Client(address, **options), True
        # Reentrant: cancelling a twin (even from a finalizer) re-enters through _settled.
        self._lock = threading.RLock()
        self._calls: dict[Hashable, tuple[Future, _Call]] = {}  # pending, by task key
        self._decided = threading.Condition()  # notified when a call starts or settles
        # Starts reported before ``_submit`` registered the call (the loop never waits for
        # ``_lock``: a submit holds it while it pickles the arguments).
        self._early_starts: set[Hashable] = set()
        self._starts_lock = threading.Lock()
        self._shutdown = False
        self._close_when_idle = False
        self._client_closed = False
        # Touched only on the client's loop:
        self._arrivals: list[tuple[Future, _Call]] = []
        self._fetcher: asyncio.Future[None] | None = None
        _live.add(self)

    @property
    def client(self) -> Client:
        """The ``Client`` this executor submits through."""
        return self._client

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on the cluster; a ``concurrent.futures.Future``."""
        [twin] = self._submit(fn, [(args, kwargs)])
        return twin

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like ``map(fn, *iterables)``, the calls running on the cluster.

        All calls are submitted at once; results come in order as the iterator is
        consumed. It raises ``TimeoutError`` if a result is not ready ``timeout`` seconds
        after the call to ``map``, and re-raises a call's exception when it gets there;
        either way the calls not yet consumed are cancelled. With ``chunksize`` > 1,
        each task makes that many calls (fewer, larger tasks for short calls).
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        end_time = None if timeout is None else time.monotonic() + timeout
        if chunksize > 1:
            calls = zip(*iterables, strict=False)
            chunks = iter(lambda: tuple(itertools.islice(calls, chunksize)), ())
            futures = self._submit(_Chunk(fn), [((chunk,), {}) for chunk in chunks])
            return _each_of_chunks(_in_order(futures, end_time))
        futures = self._submit(fn, [(args, {}) for args in zip(*iterables, strict=False)])
        return _in_order(futures, end_time)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more work; cancel pending calls if asked; wait for the rest if asked.

        ``cancel_futures`` cancels the calls that have not started; those running
        finish. A client the executor started is closed once its calls are done: at
        once with ``wait=True``, else in the background when the last one settles.
        """
        with self._lock:
            self._shutdown = True
            pending = [twin for _, twin in self._calls.values()]
            self._close_when_idle = self._owns_client and not wait and bool(pending)
        if cancel_futures:
            self._cancel_unstarted(pending)
        if wait:
            cf.wait(pending)
        if self._owns_client and not self._close_when_idle:
            self._close_client()

    def _cancel_unstarted(self, twins: list[_Call]) -> None:
        """Cancel the calls that have not started, as the workers holding them decide;
        return once each is running or done (a round trip through the cluster)."""
        with self._lock:
            calls = [self._calls[t.key] for t in twins if t.key in self._calls and not t.running()]
        if not calls:
            return
        self._client.core.cancel_soon([future for future, _ in calls], unstarted_only=True)
        undecided = [twin for _, twin in calls]
        with self._decided:
            self._decided.wait_for(lambda: all(t.running() or t.done() for t in undecided))

    def _notify_decided(self) -> None:
        with self._decided:
            self._decided.notify_all()

    # -- twins -----------------------------------------------------------------------------

    def _submit(
        self, fn: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[cf.Future[Any]]:
        """One task per call, in one message; a twin for each.

        The arguments go to the client as data, never as keywords of ``Client.submit``:
        ``fn`` receives every keyword, even ``key``, ``pure`` or ``self``.
        """
        core = self._client.core
        with self._lock:  # a shutdown sees every call submitted before it
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            futures = core.submit_many(
                fn, calls, [None] * len(calls), False, _OPTIONS, on_start=self._started
            )
            pairs = [(future, _Call(future.key)) for future in futures]
            for future, twin in pairs:
                self._calls[future.key] = (future, twin)
                twin.add_done_callback(self._twin_done)
            with self._starts_lock:
                if self._early_starts:
                    for future, twin in pairs:
                        if future.key in self._early_starts:
                            self._early_starts.discard(future.key)
                            twin.start()
        core.in_loop(self._watch, pairs)  # one wake-up of the loop for all
        return [twin for _, twin in pairs]

    def _started(self, future: Future) -> None:
        """On the client's loop: the call's task began on a worker."""
        call = self._calls.get(future.key)
        if call is None:
            with self._starts_lock:
                call = self._calls.get(future.key)
                if call is None:  # not registered yet (or settled: _arrived forgets it)
                    self._early_starts.add(future.key)
                    return
        call[1].start()
        self._notify_decided()

    def _twin_done(self, twin: cf.Future[Any]) -> None:
        assert isinstance(twin, _Call)  # registered on our twins only
        if twin.cancelled():
            # An executor's duty: moves it to CANCELLED_AND_NOTIFIED, which wakes
            # concurrent.futures.wait() and as_completed().
            twin.set_running_or_notify_cancel()
            with self._lock:
                call = self._calls.get(twin.key)
            if call is not None and not call[0].done():
                call[0].cancel()
            if self._settled(twin):
                self._close_client()
            self._notify_decided()

    # -- settling twins, in batches ----------------------------------------------------------
    # Fetching each result on its own costs a round trip to a worker per call, one after
    # another on the callback thread (~1 ms each). Instead, futures that finish while a
    # fetch is in flight are fetched together in the next one.

    def _watch(self, pairs: list[tuple[Future, _Call]]) -> None:
        """On the client's loop: queue each future for settling once it is done."""
        for future, twin in pairs:
            future._state.add_callback(partial(self._arrived, future, twin))

    def _arrived(self, future: Future, twin: _Call) -> None:
        if self._early_starts:
            with self._starts_lock:
                self._early_starts.discard(future.key)
        self._arrivals.append((future, twin))
        if self._fetcher is None or self._fetcher.done():
            self._fetcher = asyncio.ensure_future(self._fetch_arrivals())

    async def _fetch_arrivals(self) -> None:
        core = self._client.core
        while self._arrivals:
            batch, self._arrivals = self._arrivals, []
            keys = [f.key for f, twin in batch if f.status == FINISHED and not twin.done()]
            try:
                values = await core.gather_keys(keys) if keys else {}
            except Exception:  # e.g. data lost meanwhile: each twin then waits on its own
                values = {}
            # The loop's handle that resumed us holds the fetch's own copies of the results
            # until this step ends: end it, so that only ``values`` (emptied as the twins
            # are settled) holds them and a result the caller drops is freed.
            await asyncio.sleep(0)
            core.call_user_code(self._settle_batch, batch, values)
            del batch, values

    def _settle_batch(self, batch: list[tuple[Future, _Call]], values: dict[Any, Any]) -> None:
        """On the callback thread: give each twin its outcome (users' callbacks run here).

        The outcome is the last thing done with a twin, and nothing here holds on to it
        after: a result the caller drops is freed at once.
        """
        close = False
        batch.reverse()
        while batch:
            future, twin = batch.pop()
            close = self._settled(twin) or close
            if future.cancelled():
                _cancel(twin, future)
            elif twin.cancelled():
                pass  # the result is not wanted
            elif future.key in values:
                value = values.pop(future.key)
                with contextlib.suppress(cf.InvalidStateError):
                    twin.set_result(value)
                del value
            else:
                _settle(twin, future)  # an error, or a value to fetch on its own
            del future, twin
        self._notify_decided()
        if close:
            self._close_client()

    def _settled(self, twin: _Call) -> bool:
        """Forget a settled call; True if the client is now to be closed."""
        with self._lock:
            call = self._calls.get(twin.key)
            if call is not None and call[1] is twin:
                del self._calls[twin.key]  # the future goes: the cluster may free the data
            return self._close_when_idle and not self._calls

    def _close_client(self) -> None:
        with self._lock:
            if self._client_closed:
                return
            self._client_closed = True
        self._client.close()

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else f"{len(self._calls)} pending"
        return f"<Executor {self._client.scheduler_address} ({state})>"


class _Call(cf.Future[Any]):
    """A call's standard future, which knows its task and can be marked running."""

    def __init__(self, key: Hashable) -> None:
        super().__init__()
        self.key = key

    def start(self) -> None:
        """Pending → running; nothing if it was cancelled or settled meanwhile.

        Under the future's own lock, so that a concurrent ``cancel()`` either wins (and
        the call stays cancelled) or returns False.
        """
        with self._condition:
            if not self.running() and not self.done():
                self.set_running_or_notify_cancel()


# Like the standard pools, finish pending calls before the interpreter exits. Hooks run
# in reverse order of registration: ours before concurrent.futures.thread's, which stops
# the client's callback thread that settles the calls.
_live: weakref.WeakSet[Executor] = weakref.WeakSet()


def _finish_at_exit() -> None:
    for executor in list(_live):
        executor.shutdown(wait=True)


threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]


def _settle(twin: cf.Future[Any], future: Future) -> None:
    """Give ``twin`` the outcome of ``future``, which is done (fetching its value).

    A ``cancel()`` racing with this either wins (and the outcome is dropped) or
    returns False.
    """
    try:
        value = future.result()
    except (asyncio.CancelledError, cf.CancelledError):  # the client closed meanwhile
        _cancel(twin, future)
    except BaseException as e:
        with contextlib.suppress(cf.InvalidStateError):
            twin.set_exception(e)
    else:
        with contextlib.suppress(cf.InvalidStateError):
            twin.set_result(value)


def _cancel(twin: cf.Future[Any], future: Future) -> None:
    """The cluster dropped the call (e.g. its client closed): a running twin, which
    cannot be cancelled, gets the ``CancelledError`` as its outcome instead."""
    if not twin.cancel():
        with contextlib.suppress(cf.InvalidStateError):
            twin.set_exception(cf.CancelledError(f"{future.key}: {future._state.exception}"))


def _in_order(futures: list[cf.Future[Any]], end_time: float | None) -> Iterator[Any]:
    """Yield the futures' results in order, waiting until ``end_time`` at the latest.

    On a timeout, an exception, or when the iterator is dropped, cancel the futures
    not yet yielded (as the standard library does). Holds no reference to a result
    once yielded, nor to its future: what the caller drops is freed.
    """
    futures.reverse()  # pop from the end
    try:
        while futures:
            timeout = None if end_time is None else end_time - time.monotonic()
            yield _result_or_cancel(futures.pop(), timeout)
    finally:
        for future in futures:
            future.cancel()


def _result_or_cancel(future: cf.Future[Any], timeout: float | None) -> Any:
    try:
        return future.result(timeout)
    finally:
        future.cancel()  # a no-op once it has a result; stops it after a timeout


def _each_of_chunks(chunks: Iterator[list[Any]]) -> Iterator[Any]:
    """The results of each chunk in turn, each one let go of as it is yielded."""
    for chunk in chunks:
        chunk.reverse()
        while chunk:
            yield chunk.pop()


class _Chunk:
    """``fn`` applied to each argument tuple of a chunk: many calls in one task."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)  # names the tasks

    def __call__(self, chunk: tuple[tuple[Any, ...], ...]) -> list[Any]:
        return [self.fn(*args) for args in chunk]
