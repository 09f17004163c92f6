"""``Client``: the synchronous facade over ``AsyncClient``, on a background event loop.

Ctrl-C lands in the caller's thread while the work runs on the loop's: the interrupted
call cancels what it started there (``LoopRunner.run``), and a client still open when
the interpreter exits is closed then (``close_at_exit``), so the scheduler releases its
keys at once instead of after the grace period for a lost client.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from corral.client import defaults, persist
from corral.client.client import AsyncClient
from corral.client.extras import ClientExtras
from corral.client.future import Future
from corral.client.interface import ClientCore, ClusterLike
from corral.security import Security
from corral.utils import LoopRunner, close_at_exit


class Client(ClientExtras):
    """Submit work to a corral cluster and get futures back.

    ``Client()`` starts a ``LocalCluster`` of its own, with the cluster arguments given
    (``Client(n_workers=4, threads_per_worker=1, memory_limit="2GiB")``, any argument of
    ``LocalCluster``); ``Client(address)`` connects to a running scheduler.
    ``Client(..., asynchronous=True)`` returns an ``AsyncClient`` (to be awaited, or
    used with ``async with``) whose methods are coroutines.
    """

    # Any: an AsyncClient is not a Client, which mypy requires of __new__'s return type.
    def __new__(cls, address: str | ClusterLike | None = None, *, asynchronous: bool = False,
                **kwargs: Any) -> Any:
        if asynchronous:
            return AsyncClient(address, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        address: str | ClusterLike | None = None,
        *,
        asynchronous: bool = False,
        security: Security | None = None,
        timeout: float = 10.0,
        name: str = "",
        cluster_options: dict[str, Any] | None = None,
        reconnect_timeout: float = 20.0,
        scheduler_file: str | None = None,
        set_as_default: bool = True,
        **cluster_kwargs: Any,
    ) -> None:
        self._released = False  # our use of the shared loop ended (close)
        self._runner = LoopRunner.shared()  # the in-process scheduler's loop too, if any
        try:
            self._core = AsyncClient(
                address, security=security, timeout=timeout, name=name, runner=self._runner,
                cluster_options=cluster_options, reconnect_timeout=reconnect_timeout,
                scheduler_file=scheduler_file, **cluster_kwargs,
            )
        except BaseException:
            self._runner.release()
            raise
        try:
            self._runner.run(self._core.start(), timeout=timeout + 60)
        except BaseException:
            self._runner.release()
            raise
        self._exit_hook = close_at_exit(self)
        if set_as_default:  # dask's compute() and persist() run here from now on
            defaults.set_default(self)

    # dask.compute(x, scheduler=client) uses client.get for any object whose class name
    # contains "Client", has a ``get``, and is not asynchronous.
    asynchronous = False

    @property
    def core(self) -> ClientCore:
        """The asynchronous client this one runs, as corral's own modules use it."""
        return self._core

    def _run(self, coro: Any, timeout: float | None = None, what: str = "the call") -> Any:
        return self._core.blocking(coro, timeout, what)

    # -- the API -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """This client's name at the scheduler."""
        return self._core.id

    @property
    def scheduler_address(self) -> str | None:
        """The address of the scheduler this client talks to."""
        return self._core.scheduler_address

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's login link (None if the scheduler serves none)."""
        return self._core.dashboard_link

    @property
    def cluster(self) -> Any:
        """The cluster this client was given, or the ``LocalCluster`` it started."""
        return self._core.cluster

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on the cluster; a ``Future`` at once.

        Options as for ``AsyncClient.submit``: ``key``, ``pure``, ``workers``,
        ``allow_other_workers``, ``retries``, ``priority``, ``resources``."""
        return self._core.submit(fn, *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> list[Future]:
        """``submit`` for each item of the zipped iterables, in one message."""
        return self._core.map(fn, *iterables, **kwargs)

    def gather(self, futures: Any, errors: str = "raise", timeout: float | None = None) -> Any:
        """The results of (nested lists/dicts/tuples of) futures, in the same structure.

        ``errors="skip"`` leaves failed futures out instead of raising the first error."""
        return self._run(self._core.gather(futures, errors=errors), timeout, "gather()")

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """dask's scheduler interface: ``dask.compute(x, scheduler=client.get)``."""
        return self._run(self._core.get(dsk, keys, **kwargs))

    def persist(self, collections: Any, **kwargs: Any) -> Any:
        """Start computing dask collections; the same collections, backed by futures whose
        data stays on the cluster. Options: ``optimize_graph``, ``workers``,
        ``allow_other_workers``, ``retries``, ``priority``, ``resources``."""
        self._core.check_open()
        return persist.persist(self._core, collections, **kwargs)

    def compute(self, collections: Any, **kwargs: Any) -> Any:
        """Start computing dask collections; a future of each one's value (options as
        for ``persist``)."""
        self._core.check_open()
        return persist.compute(self._core, collections, **kwargs)

    def as_current(self) -> contextlib.AbstractContextManager[Any]:
        """``with client.as_current():`` dask and ``default_client()`` use this client."""
        return defaults.as_current(self)

    def scatter(
        self, data: Any, workers: str | Iterable[str] | None = None, broadcast: bool = False
    ) -> Any:
        """Put local data on workers; futures in the shape of ``data``."""
        return self._run(self._core.scatter(data, workers=workers, broadcast=broadcast))

    def cancel(self, futures: Iterable[Future]) -> None:
        """Cancel these futures; tasks nobody else wants stop or never start."""
        self._core.cancel_soon(futures)

    def retry(self, futures: Iterable[Future]) -> None:
        """Run the failed tasks of ``futures`` again (and the failed inputs they need)."""
        self._core.retry_soon(futures)

    def who_has(self, futures: Iterable[Future] | None = None) -> dict[Hashable, list[str]]:
        """``{key: [addresses of the workers holding it]}`` for these futures (or all)."""
        return self._run(self._core.who_has(futures))

    def nthreads(self) -> dict[str, int]:
        """``{worker address: number of threads}``."""
        return self._run(self._core.nthreads())

    def scheduler_info(self) -> dict[str, Any]:
        """The scheduler's address and id, and each worker's details."""
        return self._run(self._core.scheduler_info())

    def run(
        self, fn: Callable[..., Any], *args: Any, workers: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Call ``fn(*args, **kwargs)`` on every worker (or those given); ``{address: result}``."""
        return self._run(self._core.run(fn, *args, workers=workers, **kwargs))

    def wait_for_workers(self, n: int = 1, timeout: float | None = None) -> None:
        """Return once the cluster has at least ``n`` workers (``TimeoutError`` after
        ``timeout`` seconds)."""
        self._run(self._core.wait_for_workers(n, timeout))

    def restart(self) -> None:
        """Cancel every future, finished or not, and have the cluster drop all tasks and
        data: each future's status is then ``"cancelled"``."""
        self._run(self._core.restart())

    def retire_workers(
        self, workers: str | Iterable[str], timeout: float = 60.0
    ) -> dict[str, dict[str, Any]]:
        """Close ``workers`` (addresses, names or host names) gracefully, after moving the
        data only they hold (scattered data too) to other workers."""
        return self._run(self._core.retire_workers(workers, timeout=timeout))

    def close(self) -> None:
        """Release this client's futures and disconnect; closes a cluster it started."""
        if self._released:
            return
        defaults.forget(self)
        atexit.unregister(self._exit_hook)
        try:
            if not self._core.closed:
                self._run(self._core.close(), timeout=30)
        finally:
            self._released = True
            self._runner.release()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.id} scheduler={self.scheduler_address}>"
