"""``AsyncClient``: the one implementation of the client, on an event loop.

``Client`` (sync) runs this on a background loop; ``Client(asynchronous=True)`` *is*
this. Submitting never waits: the task is packed in the caller's thread and handed to
the loop, which batches it onto the scheduler stream. Results are fetched straight
from the workers that hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine, Hashable, Iterable
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from corral import config, runspec
from corral import messages as msgs
from corral.client import defaults, fetch, persist, reports, scatter
from corral.client.cluster import cluster_arguments, wait_for_workers
from corral.client.extras import AsyncClientExtras
from corral.client.future import (
    CANCELLED,
    PENDING,
    Finished,
    Future,
    FutureState,
    pickled_futures,
    reading_client,
)
from corral.client.holdings import Holdings
from corral.client.interface import ClientCore, ClusterLike
from corral.client.requests import Requests
from corral.client.tasks import task_message, task_options, unique_suffix, worker_specs
from corral.comm import shm
from corral.comm.addressing import normalize_address
from corral.core import BatchedSend, Comm, ConnectionPool, connect
from corral.credentials import resolve
from corral.exceptions import (
    ClientClosedError,
    CommClosedError,
    CommError,
    CorralError,
)
from corral.security import Security
from corral.utils import LoopRunner, parse_bytes, with_timeout

logger = logging.getLogger("corral.client")
T = TypeVar("T")
RESTARTED = "restarted: client.restart() dropped every task and result; submit again"



class AsyncClient(AsyncClientExtras, ClientCore):
    """Connects to a scheduler (or starts a ``LocalCluster`` when given no address)."""

    def __init__(
        self,
        address: str | ClusterLike | None = None,
        *,
        security: Security | None = None,
        timeout: float = 10.0,
        name: str = "",
        runner: LoopRunner | None = None,
        cluster_options: dict[str, Any] | None = None,
        reconnect_timeout: float = 20.0,
        scheduler_file: str | None = None,
        set_as_default: bool = True,
        **cluster_kwargs: Any,
    ) -> None:
        self._cluster_options = cluster_arguments(address, cluster_options, cluster_kwargs)
        self._set_as_default = set_as_default and runner is None  # a sync Client sets itself
        given_cluster = None if address is None or isinstance(address, str) else address
        if address is not None and not isinstance(address, str):  # a cluster object
            security = security or address.security
            address = address.scheduler_address
        address, security = resolve(address, security, scheduler_file)
        self.scheduler_address = normalize_address(address) if address else None
        self.security = security
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self._scheduler_id: str | None = None
        self._dashboard_port: int | None = None
        self.id = name or f"client-{uuid.uuid4().hex[:12]}"
        self._ids = msgs.StimulusIds(self.id)  # every message it sends: "<id>-<n>"
        self._runner = runner  # set for sync clients: where blocking calls wait
        self.cluster: Any = given_cluster  # the one given, or (below) the one it starts
        self._owns_cluster = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool = ConnectionPool(security=security, timeout=timeout, name=self.id)
        self._stream = BatchedSend(0.002, name=f"{self.id} to scheduler")
        self.holdings = Holdings()
        self._states = self.holdings.states  # key -> the state its futures share
        self.inline_results = reports.InlineResults(
            parse_bytes(config.get("client.inline-results-budget")))
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._callback_pool: Any = None
        self._start_callbacks: dict[Hashable, Callable[[], None]] = {}  # see submit_many
        self.requests = Requests(self)  # locks, queues, variables...: corral.client.requests

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> AsyncClient:
        self.loop = asyncio.get_running_loop()
        if self.scheduler_address is None:
            from corral.deploy.local import LocalCluster

            options = {"security": self.security, **self._cluster_options}
            self.cluster = await LocalCluster(asynchronous=True, **options)
            self._owns_cluster = True
            if self._runner is not None:  # cluster.scale(n) blocks, as the client's calls do
                self.cluster.run_on(self._runner)
            self.scheduler_address = self.cluster.scheduler_address
            self.security = self.cluster.security
            self.pool.security = self.security
        comm = await self._register(self.timeout)
        self._reader = asyncio.ensure_future(self._read_reports(comm))
        if self._set_as_default:
            defaults.set_default(self)
        return self

    async def _register(self, timeout: float) -> Comm:
        """Connect (retrying up to ``timeout``), register, and start the batched stream."""
        assert self.scheduler_address is not None
        comm = await connect(
            self.scheduler_address, timeout=timeout, security=self.security,
            role="client", name=self.id,
        )
        await comm.write({"op": "register-client", "client": self.id})
        reply = await asyncio.wait_for(comm.read(), timeout)
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            comm.abort()
            raise CorralError(f"scheduler refused this client: {reply!r}")
        self._stream = BatchedSend(0.002, name=f"{self.id} to scheduler")
        self._stream.start(comm)
        self._scheduler_id = reply.get("scheduler")
        self._dashboard_port = reply.get("dashboard")
        return comm

    @property
    def dashboard_link(self) -> str | None:
        """The scheduler's dashboard (None if it serves none).

        With a token, the link logs the browser in once (it then holds a cookie), so it
        is as secret as the token: share it as you would the token.
        """
        if not self._dashboard_port or self.scheduler_address is None:
            return None
        host = urlsplit(self.scheduler_address).hostname or "127.0.0.1"
        base = f"http://{f'[{host}]' if ':' in host else host}:{self._dashboard_port}"
        from corral.dashboard.access import login_link  # not before a link is asked for

        return login_link(base, self.security)

    def __await__(self) -> Any:
        return self.start().__await__()

    async def __aenter__(self) -> AsyncClient:
        return self if self.loop is not None else await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        defaults.forget(self)
        for state in list(self._states.values()):  # futures may be released meanwhile
            state.cancel("client closed")
        self.requests.fail_all(ClientClosedError(f"this client ({self.id}) is closed"))
        # Release our keys now, not after a grace period.
        self._send(msgs.CloseClient(stimulus_id=self._ids()))
        await self._stream.close(timeout=2)
        if self._reader is not None:
            self._reader.cancel()
        await self.pool.close()
        # Segments kept to lend again (scattered data the workers gave back): with its
        # connections closed no release can come, and this client lends nothing more.
        shm.trim_cache(clear=True)
        if self._owns_cluster:
            await self.cluster.aclose()
        if self._callback_pool is not None:
            self._callback_pool.shutdown(wait=False)

    @property
    def asynchronous(self) -> bool:
        """True unless a synchronous ``Client`` drives this one (dask reads it too)."""
        return self._runner is None

    @property
    def scheduler(self) -> Any:
        """rpc to the scheduler's query handlers."""
        assert self.scheduler_address is not None
        return self.pool(self.scheduler_address)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has begun; its futures are cancelled then."""
        return self._closed

    @property
    def runner(self) -> LoopRunner | None:
        """The loop a synchronous client's blocking calls wait on; None if asynchronous."""
        return self._runner

    def check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(f"this client ({self.id}) is closed")

    def blocking(
        self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str = "the call"
    ) -> T:
        """Run ``coro`` to completion from a synchronous caller; after ``timeout`` seconds
        raise ``TimeoutError("<what> timed out after <timeout> s")``."""
        if self._runner is None or self._closed:
            coro.close()  # never started: no "never awaited" warning
            self.check_open()  # closed: say so (its loop is gone)
            raise RuntimeError(
                "this client is asynchronous: use `await future` / `await client.gather(...)`"
            )
        self.holdings.queued()  # (its messages go after the releases so far)
        return self._runner.run(with_timeout(coro, timeout, what))

    def in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the client's loop, from any thread."""
        assert self.loop is not None
        if self._runner is None or self._runner.in_loop_thread():
            fn(*args)
        else:
            self.holdings.queued()  # (releases after this go after it: ``Holdings``)
            self.loop.call_soon_threadsafe(fn, *args)

    # -- reference counting ----------------------------------------------------------

    def acquire_key(self, key: Hashable) -> FutureState:
        return self.holdings.acquire(key)

    def holds(self, key: Hashable) -> bool:
        return key in self._states

    def release_key(self, key: Hashable) -> None:
        if self._closed or self.loop is None or self.loop.is_closed():
            self.holdings.release(key)  # closing releases everything anyway
            return
        if self._runner is None or self._runner.in_loop_thread():
            if self.holdings.release(key):
                self._send_releases([key])
            return
        batch = self.holdings.release_later(key)
        if batch is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self._send_releases, batch)

    def _send_releases(self, batch: list[Hashable]) -> None:
        """On the loop: tell the scheduler of the keys in ``batch`` in one message. It
        waits for the next message, or at most a batch interval
        (``BatchedSend.send_later``), so the release of the last result and the next
        submit reach the scheduler (and it the worker) together."""
        keys = self.holdings.take(batch)
        with contextlib.suppress(CommClosedError):
            self._stream.send_later(msgs.ClientReleasesKeys(
                stimulus_id=self._ids(), keys=keys).to_wire())

    def _send(self, msg: msgs.FromClient) -> None:
        self._send_wire(msg.to_wire())

    def send(self, msg: msgs.FromClient) -> None:
        """On the loop: send ``msg`` to the scheduler on the client's stream."""
        self._send(msg)

    def _send_wire(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(CommClosedError):
            self._stream.send(msg)

    # -- submitting ------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        key: Hashable | None = None,
        pure: bool = True,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
        retries: int = 0,
        priority: int = 0,
        resources: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> Future:
        """Run ``fn(*args, **kwargs)`` on the cluster; futures among the arguments are
        replaced by their values on the worker."""
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {type(fn).__name__}")
        options = task_options(workers, allow_other_workers, retries, priority, resources)
        (future,) = self.submit_many(fn, [(args, kwargs)], [key], pure, options)
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        key: Iterable[Hashable] | None = None,
        pure: bool = True,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
        retries: int = 0,
        priority: int = 0,
        resources: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> list[Future]:
        """``submit`` for each item of the zipped iterables, in one message to the scheduler."""
        if not callable(fn):
            raise TypeError(f"map() needs a callable, got {type(fn).__name__}")
        calls = [(args, kwargs) for args in zip(*iterables, strict=False)]
        keys: list[Hashable | None] = list(key) if key is not None else [None] * len(calls)
        if len(keys) != len(calls):
            raise ValueError(f"map() got {len(keys)} keys for {len(calls)} calls")
        options = task_options(workers, allow_other_workers, retries, priority, resources)
        return self.submit_many(fn, calls, keys, pure, options)

    def _refuse_foreign(self, futures: Iterable[Future]) -> None:
        """A future of another client names a key this client's scheduler session does not
        hold (and may be another cluster's): refuse it here, not in a worker later."""
        for future in futures:
            if future.client is not self:
                closed = "closed " if future.client.closed else ""
                raise ValueError(
                    f"future {future.key!r} belongs to another {closed}client "
                    f"({future.client.id}); pass futures only to the client that made them"
                )

    def submit_many(
        self,
        fn: Callable[..., Any],
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        keys: list[Hashable | None],
        pure: bool,
        options: dict[str, Any],
        on_start: Callable[[Future], None] | None = None,
    ) -> list[Future]:
        """Futures for ``fn(*args, **kwargs)`` per call; ``on_start(future)`` is called on
        the loop when its task starts on a worker (never, if it finishes unstarted)."""
        self.check_open()
        with pickled_futures() as held_by_all:  # futures in a closure, say: see hold()
            function_bytes = runspec.pickle_function(fn)
        name = getattr(fn, "__name__", type(fn).__name__).replace("<lambda>", "lambda")
        prepared = []  # every call checked before any future is made or task sent
        for args, kwargs in calls:
            found: list[Future] = []
            args, kwargs = runspec.replace_in((args, kwargs), _as_dependency, found)
            self._refuse_foreign(found)
            prepared.append((args, kwargs, found))
        tasks, futures = [], []
        for (args, kwargs, found), key in zip(prepared, keys, strict=True):
            if key is None:
                suffix = (
                    runspec.token(function_bytes, args, kwargs) if pure else unique_suffix()
                )
                key = f"{name}-{suffix}"
            known = key in self._states and self._states[key].status != CANCELLED
            futures.append(Future(key, self))
            if known:  # an equal pure call already submitted: share its task
                continue
            deps = list(dict.fromkeys(f.key for f in found))
            with pickled_futures() as held:
                run_spec = runspec.pack_args(args, kwargs)
            if held or held_by_all:
                futures[-1]._state.hold(held_by_all + held)
            tasks.append(task_message(key, run_spec, deps, name, options,
                                      function=0))  # the graph carries fn once
        if on_start is not None:
            self.in_loop(self._watch_starts, futures, on_start)  # before the graph leaves
        if tasks:
            self.send_graph(tasks, [t.key for t in tasks], report_start=on_start is not None,
                            functions=(function_bytes,))
        return futures

    def send_graph(
        self, tasks: list[msgs.TaskSpec], wanted: list[Hashable], report_start: bool = False,
        functions: tuple[bytes, ...] = (),
    ) -> None:
        """Send tasks (made by ``task_message``) to the scheduler, from any thread, in one message;
        the client wants the results of ``wanted`` (and to hear when they start, if asked)."""
        self.in_loop(self._send, msgs.UpdateGraph(
            stimulus_id=self._ids(), tasks=tuple(tasks), wanted=tuple(wanted),
            report_start=report_start, functions=functions))

    def _watch_starts(self, futures: list[Future], on_start: Callable[[Future], None]) -> None:
        for future in futures:
            if not future.done():
                self._start_callbacks[future.key] = partial(on_start, future)

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """dask's scheduler interface: ``await client.get(dsk, keys)``; see ``dask_graph``.

        The graph is sent at once, in one message; awaiting returns the results."""
        self.check_open()
        from corral.client import dask_graph  # imports dask, an optional dependency

        return dask_graph.get(self, dsk, keys, **kwargs)

    def persist(self, collections: Any, **kwargs: Any) -> Any:
        """Start computing dask collections; the same collections, backed by futures whose
        data stays on the cluster (``corral.client.persist``)."""
        self.check_open()
        return persist.persist(self, collections, **kwargs)

    def compute(self, collections: Any, **kwargs: Any) -> Any:
        """Start computing dask collections; a future of each one's value."""
        self.check_open()
        return persist.compute(self, collections, **kwargs)

    def as_current(self) -> contextlib.AbstractContextManager[Any]:
        """``with client.as_current():`` dask and ``default_client()`` use this client."""
        return defaults.as_current(self)

    async def cancel(self, futures: Iterable[Future]) -> None:
        """Cancel these futures; tasks nobody else wants stop or never start.

        The futures turn cancelled when the scheduler's confirmation arrives.
        """
        self.cancel_soon(futures)

    def cancel_soon(self, futures: Iterable[Future], unstarted_only: bool = False) -> None:
        """``cancel`` from any thread, without waiting (``Future.cancel``, the sync client);
        ``unstarted_only`` spares tasks that have started (the workers decide)."""
        self.check_open()
        keys = list(dict.fromkeys(f.key for f in futures))
        self.in_loop(self._send, msgs.CancelKeys(stimulus_id=self._ids(), keys=tuple(keys),
                                                  unstarted_only=unstarted_only))

    # -- reports from the scheduler -------------------------------------------------------

    async def _read_reports(self, comm: Comm) -> None:
        """Read the scheduler's reports; after a lost connection, reconnect and resume."""
        while True:
            try:
                while True:
                    for msg in await comm.read():
                        self._on_report(msg)
            except CommError:
                pass
            if self._closed:
                return
            self._stream.abort()
            self.requests.fail_all(CommClosedError(
                "lost the connection to the scheduler while waiting on it"))
            logger.warning("lost the connection to the scheduler; reconnecting for up to %s s",
                           self.reconnect_timeout)
            previous, unsent = self._scheduler_id, self._stream.unsent()
            try:
                comm = await self._register(self.reconnect_timeout)
            except (CorralError, TimeoutError) as e:  # unreachable, refused or silent
                self._fail_pending(CommClosedError(
                    f"lost the connection to the scheduler at {self.scheduler_address} "
                    f"and could not reconnect within {self.reconnect_timeout} s: {e}"
                ))
                return
            if self._scheduler_id != previous:
                self._fail_pending(CommClosedError(
                    "the scheduler was restarted while this client was away; "
                    "its pending work is lost"
                ))
            else:  # resend what may not have arrived; reports sent while away are lost: ask again
                for msg in unsent:
                    self._send_wire(msg)
                keys = [k for k, state in list(self._states.items()) if state.status == PENDING]
                if keys:
                    self._send(msgs.ClientDesiresKeys(stimulus_id=self._ids(), keys=tuple(keys)))
            logger.info("reconnected to the scheduler at %s", self.scheduler_address)

    def _fail_pending(self, error: BaseException) -> None:
        for state in list(self._states.values()):
            if state.status == PENDING:
                state.fail(error)

    def _on_report(self, msg: Any) -> None:
        reports.on_report(self, msg)

    def add_done_callback(self, future: Future, fn: Callable[[Future], Any]) -> None:
        self.check_open()
        self.in_loop(future._state.add_callback, partial(self.call_user_code, fn, future))

    def call_user_code(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` from the loop: at once for asynchronous clients, else on the
        callback thread (never on the loop of a sync client: user code may block on it)."""
        if self._runner is None:
            fn(*args)
            return
        if self._callback_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._callback_pool = ThreadPoolExecutor(1, "corral-callback")
        self._callback_pool.submit(fn, *args)

    # -- results ---------------------------------------------------------------------------

    async def gather(self, futures: Any, errors: str = "raise") -> Any:
        """Results of (nested lists/dicts/tuples of) futures, in the same structure."""
        self.check_open()
        if errors not in ("raise", "skip"):
            raise ValueError("errors must be 'raise' or 'skip'")
        found: list[Future] = []
        structure = runspec.replace_in(futures, _as_dependency, found)
        self._refuse_foreign(found)
        await Finished(found).wait_all()
        self.check_open()  # closed meanwhile: its futures were cancelled, say why
        data = await self.gather_keys([f.key for f in found], errors)
        return fetch.fill(structure, data)

    async def gather_keys(
        self, keys: list[Hashable], errors: str = "raise"
    ) -> dict[Hashable, Any]:
        """Fetch values straight from the workers holding them (``fetch.gather_keys``);
        futures inside them become this client's."""
        token = reading_client.set(self)
        try:
            return await fetch.gather_keys(self._states, self.pool, self._report_missing,
                                           keys, errors)
        finally:
            reading_client.reset(token)

    def adopt(self, key: Hashable) -> Future:
        """A future for ``key``, made elsewhere (unpickled): this client wants it too."""
        new = key not in self._states
        future = Future(key, self)
        if new:
            self.in_loop(self._send, msgs.ClientDesiresKeys(stimulus_id=self._ids(),
                                                             keys=(key,)))
        return future

    def retry_soon(self, futures: Iterable[Future]) -> None:
        """Run failed tasks again, from any thread (``keeping.retry``)."""
        from corral.client import keeping

        keeping.retry(self, futures)

    async def retry(self, futures: Iterable[Future]) -> None:
        """Run the failed tasks of ``futures`` again (and the failed inputs they need)."""
        self.retry_soon(futures)

    def new_id(self) -> str:
        """A stimulus id for a message from this client: ``<id>-<n>``."""
        return self._ids()

    def _report_missing(self, key: Hashable, errant_worker: str) -> None:
        self._send(msgs.ClientMissingData(stimulus_id=self._ids(), key=key,
                                          errant_worker=errant_worker))

    async def scatter(
        self, data: Any, workers: str | Iterable[str] | None = None, broadcast: bool = False
    ) -> Any:
        """Put local data on workers; returns futures in the shape of ``data``."""
        self.check_open()
        return await scatter.scatter(self, data, workers, broadcast)

    # -- the cluster -------------------------------------------------------------------

    async def wait_for_workers(self, n: int = 1, timeout: float | None = None) -> None:
        """Return once the cluster has at least ``n`` workers (``TimeoutError`` after
        ``timeout`` seconds)."""
        await wait_for_workers(self, n, timeout)

    async def restart(self) -> None:
        """Cancel every future, finished or not, and have the cluster drop all tasks and
        data: ``future.status`` is then ``"cancelled"`` and ``result()`` raises
        ``CancelledError``. Submitting the same work again computes it afresh."""
        self.check_open()
        for state in list(self._states.values()):
            state.lose(RESTARTED)
        await self.scheduler.restart()

    async def retire_workers(
        self, workers: str | Iterable[str], timeout: float = 60.0
    ) -> dict[str, dict[str, Any]]:
        """Close ``workers`` (addresses, names or host names) gracefully: the data only
        they hold, scattered data included, moves to other workers first, and their
        nannies do not restart them. ``{address: {"name": ...}}`` of those retired."""
        self.check_open()
        return await self.scheduler.retire_workers(workers=worker_specs(workers),
                                                   timeout=timeout)

    def __repr__(self) -> str:
        return f"<AsyncClient {self.id} scheduler={self.scheduler_address}>"


def _as_dependency(x: Any) -> runspec.Dependency | None:
    return runspec.Dependency(x.key) if isinstance(x, Future) else None

