"""``Executor``: the standard library's ``concurrent.futures.Executor`` on a corral cluster.

A thin layer over the synchronous ``Client``: ``submit`` and ``map`` hand work to the
client, and each corral ``Future`` gets a ``concurrent.futures.Future`` twin. Results
that arrive together are fetched together, and the twins are settled on the client's
callback thread, never on its event loop. The callbacks users add to the twins run
there too: they may submit work, but (as with a one-thread ``ThreadPoolExecutor``) must
not wait for another twin, which that thread would settle. Cancelling a twin that is
still pending cancels its task.

The cluster does not tell a client when a task starts, so a twin is never "running":
``cancel()`` succeeds until the result has arrived, and asks the cluster to stop the
task whether it is queued or already running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import inspect
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from corral.client.client import AsyncClient
from corral.client.future import FINISHED, Future
from corral.client.sync import Client

if TYPE_CHECKING:
    from corral.deploy import Cluster, LocalCluster

# Keywords that ``Client.submit`` takes for itself; an Executor passes every keyword to
# ``fn``, so calls using one of these names go through a partial instead.
_SUBMIT_OPTIONS = frozenset(
    name for name, p in inspect.signature(AsyncClient.submit).parameters.items()
    if p.kind is p.KEYWORD_ONLY
)


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
            self._client, self._owns_client = Client(address, **client_options), True
        # Reentrant: cancelling a twin (even from a finalizer) re-enters through _settled.
        self._lock = threading.RLock()
        self._pending: set[cf.Future[Any]] = set()
        self._shutdown = False
        self._close_when_idle = False
        self._client_closed = False
        # Touched only on the client's loop:
        self._arrivals: list[tuple[Future, cf.Future[Any]]] = []
        self._fetcher: asyncio.Future[None] | None = None

    @property
    def client(self) -> Client:
        """The ``Client`` this executor submits through."""
        return self._client

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on the cluster; a ``concurrent.futures.Future``."""
        if kwargs.keys() & _SUBMIT_OPTIONS:
            fn, kwargs = partial(fn, **kwargs), {}
        with self._lock:
            self._check_open()
            [twin] = self._twins([self._client.submit(fn, *args, pure=False, **kwargs)])
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
            chunked = _Chunk(fn)
            with self._lock:
                self._check_open()
                futures = self._twins(self._client.map(chunked, chunks, pure=False))
            return itertools.chain.from_iterable(_in_order(futures, end_time))
        with self._lock:
            self._check_open()
            futures = self._twins(self._client.map(fn, *iterables, pure=False))
        return _in_order(futures, end_time)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more work; cancel pending calls if asked; wait for the rest if asked.

        A client the executor started is closed once its calls are done: at once with
        ``wait=True``, else in the background when the last one settles.
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
            self._close_when_idle = self._owns_client and not wait and bool(pending)
        if cancel_futures:
            for twin in pending:
                twin.cancel()
        if wait:
            cf.wait(pending)
        if self._owns_client and not self._close_when_idle:
            self._close_client()

    # -- twins -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _twins(self, futures: list[Future]) -> list[cf.Future[Any]]:
        """``concurrent.futures.Future`` twins that follow ``futures``; called under the lock."""
        pairs = [(future, self._twin(future)) for future in futures]
        self._client._core._in_loop(self._watch, pairs)  # one wake-up of the loop for all
        return [twin for _, twin in pairs]

    def _twin(self, future: Future) -> cf.Future[Any]:
        twin: cf.Future[Any] = cf.Future()
        self._pending.add(twin)

        def on_twin_done(twin: cf.Future[Any]) -> None:
            if twin.cancelled():
                # An executor's duty: moves it to CANCELLED_AND_NOTIFIED, which wakes
                # concurrent.futures.wait() and as_completed().
                twin.set_running_or_notify_cancel()
                if not future.done():
                    future.cancel()
                self._settled(twin)

        twin.add_done_callback(on_twin_done)
        return twin

    # -- settling twins, in batches ----------------------------------------------------------
    # Fetching each result on its own costs a round trip to a worker per call, one after
    # another on the callback thread (~1 ms each). Instead, futures that finish while a
    # fetch is in flight are fetched together in the next one.

    def _watch(self, pairs: list[tuple[Future, cf.Future[Any]]]) -> None:
        """On the client's loop: queue each future for settling once it is done."""
        for future, twin in pairs:
            future._state.add_callback(partial(self._arrived, future, twin))

    def _arrived(self, future: Future, twin: cf.Future[Any]) -> None:
        self._arrivals.append((future, twin))
        if self._fetcher is None or self._fetcher.done():
            self._fetcher = asyncio.ensure_future(self._fetch_arrivals())

    async def _fetch_arrivals(self) -> None:
        core = self._client._core
        while self._arrivals:
            batch, self._arrivals = self._arrivals, []
            keys = [f.key for f, twin in batch if f.status == FINISHED and not twin.done()]
            try:
                values = await core._gather_keys(keys) if keys else {}
            except Exception:  # e.g. data lost meanwhile: each twin then waits on its own
                values = {}
            core._call_user_code(self._settle_batch, batch, values)

    def _settle_batch(
        self, batch: list[tuple[Future, cf.Future[Any]]], values: dict[Any, Any]
    ) -> None:
        """On the callback thread: give each twin its outcome (users' callbacks run here)."""
        for future, twin in batch:
            try:
                if future.cancelled():
                    twin.cancel()
                elif twin.cancelled():
                    pass  # the result is not wanted
                elif future.key in values:
                    with contextlib.suppress(cf.InvalidStateError):
                        twin.set_result(values[future.key])
                else:
                    _settle(twin, future)  # an error, or a value to fetch on its own
            finally:
                self._settled(twin)

    def _settled(self, twin: cf.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(twin)
            close = self._close_when_idle and not self._pending
        if close:
            self._close_client()

    def _close_client(self) -> None:
        with self._lock:
            if self._client_closed:
                return
            self._client_closed = True
        self._client.close()

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else f"{len(self._pending)} pending"
        return f"<Executor {self._client.scheduler_address} ({state})>"


def _settle(twin: cf.Future[Any], future: Future) -> None:
    """Give ``twin`` the outcome of ``future``, which is done (fetching its value).

    ``twin`` goes straight from pending to finished: a ``cancel()`` racing with this
    either wins (and the outcome is dropped) or returns False.
    """
    try:
        value = future.result()
    except (asyncio.CancelledError, cf.CancelledError):  # the client closed meanwhile
        twin.cancel()
    except BaseException as e:
        with contextlib.suppress(cf.InvalidStateError):
            twin.set_exception(e)
    else:
        with contextlib.suppress(cf.InvalidStateError):
            twin.set_result(value)


def _in_order(futures: list[cf.Future[Any]], end_time: float | None) -> Iterator[Any]:
    """Yield the futures' results in order, waiting until ``end_time`` at the latest.

    On a timeout, an exception, or when the iterator is dropped, cancel the futures
    not yet yielded (as the standard library does).
    """
    futures.reverse()  # pop from the end: hold no reference to results already yielded
    try:
        while futures:
            timeout = None if end_time is None else end_time - time.monotonic()
            yield futures[-1].result(timeout)
            futures.pop()
    finally:
        for future in futures:
            future.cancel()


class _Chunk:
    """``fn`` applied to each argument tuple of a chunk: many calls in one task."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)  # names the tasks

    def __call__(self, chunk: tuple[tuple[Any, ...], ...]) -> list[Any]:
        return [self.fn(*args) for args in chunk]
