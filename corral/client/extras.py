"""The client's everyday extras: questions about the cluster, functions run on every
worker, worker plugins and uploaded files, published datasets, the task stream.

``AsyncClientExtras`` is mixed into ``AsyncClient`` (coroutines), ``ClientExtras``
into the synchronous ``Client`` (each method runs its coroutine on the client's loop).
Datasets are held by the scheduler's coordination machine like variables: a published
value keeps the data of the futures inside it alive until it is unpublished.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral import messages as msgs
from corral.client.future import Future
from corral.client.persist import futures_of
from corral.client.reports import load_exception
from corral.client.requests import dump_item
from corral.client.tasks import addresses, worker_specs
from corral.credentials import write_scheduler_file
from corral.exceptions import CorralError
from corral.protocol import dumps_pickle

if TYPE_CHECKING:
    from corral.client.client import AsyncClient
    from corral.client.requests import Requests
    from corral.security import Security

_NO_DEFAULT: Any = object()

# Methods of dask's scheduler plugins: an object with them is not a worker plugin.
_SCHEDULER_HOOKS = ("add_worker", "remove_worker", "update_graph", "add_client",
                    "remove_client", "restart")


class WorkerPlugin:
    """A base for worker plugins (any object with some of these methods will do):
    ``setup`` when registered on a worker (or when a worker joins later), ``teardown``
    when unregistered or the worker closes, ``transition`` on every task transition.
    They run on the workers only, never on the scheduler."""

    name: str | None = None

    def setup(self, worker: Any) -> Any:
        """Called with the worker when the plugin is set up there."""

    def teardown(self, worker: Any) -> Any:
        """Called with the worker when the plugin is removed or the worker closes."""

    def transition(self, key: Hashable, start: str, finish: str, **kwargs: Any) -> None:
        """Called when task ``key`` moves from state ``start`` to ``finish``."""


def _keys(items: Iterable[Any] | None) -> list[Any] | None:
    return None if items is None else [f.key if isinstance(f, Future) else f for f in items]


def _check_replies(what: str, replies: dict[str, Any]) -> dict[str, Any]:
    for worker, reply in replies.items():
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            text = reply.get("exception_text") if isinstance(reply, dict) else reply
            raise CorralError(f"{what} failed on worker {worker}: {text}")
    return replies


class AsyncClientExtras:
    """Mixed into ``AsyncClient``, which provides these."""

    if TYPE_CHECKING:
        requests: Requests
        scheduler_address: str | None
        security: Security | None

        @property
        def scheduler(self) -> Any: ...

        def check_open(self) -> None: ...

    # -- questions -----------------------------------------------------------------------

    async def who_has(self, futures: Iterable[Future] | None = None) -> dict[Hashable, list[str]]:
        """``{key: [addresses of the workers holding it]}`` for these futures (or all)."""
        self.check_open()
        keys = None if futures is None else [f.key for f in futures]
        return await self.scheduler.who_has(keys=keys)

    async def nthreads(self) -> dict[str, int]:
        """``{worker address: number of threads}``."""
        self.check_open()
        return await self.scheduler.nthreads()

    async def scheduler_info(self) -> dict[str, Any]:
        """The scheduler's address and id, and each worker's details."""
        self.check_open()
        return await self.scheduler.scheduler_info()

    async def run(
        self, fn: Callable[..., Any], *args: Any, workers: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Call ``fn(*args, **kwargs)`` on every worker (or those given); ``{address: result}``."""
        self.check_open()
        msg = {"op": "run", "function": dumps_pickle(fn), "args": dumps_pickle((args, kwargs))}
        targets = None if workers is None else addresses(workers)
        replies = await self.scheduler.broadcast(msg=msg, workers=targets)
        results = {}
        for worker, reply in replies.items():
            if reply.get("status") != "OK":
                raise load_exception(reply.get("exception"), reply.get("exception_text", ""),
                                      reply.get("traceback_text", ""))
            results[worker] = pickle.loads(reply["result"])
        return results

    async def get_versions(self, check: bool = False,
                           packages: Iterable[str] | None = None) -> dict[str, Any]:
        """The versions of Python and the main packages (and of ``packages``) on this
        client, the scheduler and every worker: ``{"client": ..., "scheduler": ...,
        "workers": {address: ...}}``, each ``{"host": ..., "packages": ...}``. With
        ``check``, a difference (see ``corral.versions.mismatches``) is a ``ValueError``."""
        from corral.versions import mismatches, versions

        wanted = list(packages or ())
        report = {"client": versions(wanted),
                  "scheduler": (await self.scheduler_info()).get("versions", {}),
                  "workers": await self.run(versions, wanted)}
        if check and (found := mismatches(report)):
            raise ValueError("versions differ between the client and the cluster:\n  "
                             + "\n  ".join(found))
        return report

    async def has_what(self, workers: Iterable[str] | None = None
                       ) -> dict[str, list[Hashable]]:
        """``{worker: [keys it holds]}`` for every worker (or those given)."""
        self.check_open()
        return await self.scheduler.has_what(workers=None if workers is None else list(workers))

    async def replicate(self, futures: Any, n: int | None = None,
                        workers: str | Iterable[str] | None = None,
                        branching_factor: int = 2, timeout: float = 60.0) -> None:
        """Copy the data of ``futures`` (or of the futures in collections) until ``n``
        workers hold each (all of ``workers`` if ``n`` is None; ``workers``: addresses,
        names or hosts, default all). Returns once they do (or after ``timeout``).
        ``branching_factor`` is dask's and ignored: each new copy is fetched by the
        worker that will hold it, from any holder."""
        self.check_open()
        keys = [f.key for f in futures_of(futures)]
        await self.scheduler.replicate(keys=keys, n=n or 0, timeout=timeout,
                                       workers=None if workers is None else worker_specs(workers))

    async def processing(self, workers: Iterable[str] | None = None
                         ) -> dict[str, list[Hashable]]:
        """``{worker: [keys sent to it and not yet done]}``."""
        self.check_open()
        return await self.scheduler.processing(
            workers=None if workers is None else list(workers))

    async def nbytes(self, keys: Iterable[Any] | None = None,
                     summary: bool = True) -> dict[Hashable, int]:
        """Bytes held per key (of these keys or futures, or of all), summed per key prefix
        (``"inc-8f3a…"`` counts as ``"inc"``) with ``summary``."""
        self.check_open()
        return await self.scheduler.nbytes(keys=_keys(keys), summary=summary)

    async def story(self, *keys: Any) -> list[dict[str, Any]]:
        """What happened to these keys (or futures): each step of the scheduler's story
        (the stimulus and the moves it caused), then each worker's transitions."""
        self.check_open()
        return await self.scheduler.story(keys=_keys(keys))

    async def get_worker_logs(self, n: int | None = None,
                              workers: Iterable[str] | None = None
                              ) -> dict[str, list[tuple[str, str]]]:
        """The last ``n`` (or all kept) log lines of each worker: ``[(level, line)]``."""
        self.check_open()
        return await self.scheduler.worker_logs(
            n=n, workers=None if workers is None else list(workers))

    async def get_scheduler_logs(self, n: int | None = None) -> list[tuple[str, str]]:
        """The last ``n`` (or all kept) log lines of the scheduler's process:
        ``[(level, line)]``."""
        self.check_open()
        return await self.scheduler.scheduler_logs(n=n)

    async def get_task_stream(self, start: float | None = None,
                              stop: float | None = None, count: int | None = None
                              ) -> list[dict[str, Any]]:
        """The tasks that ran (and data transfers) the scheduler still remembers, between
        the times ``start`` and ``stop``, the last ``count``: each a dict with ``key``,
        ``name``, ``worker``, ``status``, ``nbytes`` and ``startstops``."""
        self.check_open()
        reply = await self.scheduler.task_stream(start=start, stop=stop, count=count)
        return list(reply["records"])

    # -- worker plugins and files ----------------------------------------------------------

    async def register_plugin(self, plugin: Any, name: str | None = None,
                              idempotent: bool = False) -> dict[str, Any]:
        """Set ``plugin`` up on every worker now and on each that joins later (see
        ``WorkerPlugin``); ``{worker: {"status": "OK"}}``. Registered again under its
        name, it replaces the old one (torn down first), unless ``idempotent``: then the
        first stays. Scheduler plugins are refused: the scheduler never runs user code."""
        self.check_open()
        if any(hasattr(plugin, hook) for hook in _SCHEDULER_HOOKS) or (
                hasattr(plugin, "start") and not hasattr(plugin, "setup")):
            raise TypeError(f"{type(plugin).__name__} looks like a scheduler plugin: corral "
                            "runs no user code on the scheduler; only worker plugins (setup, "
                            "teardown, transition) can be registered")
        name = name or getattr(plugin, "name", None) or (
            f"{type(plugin).__name__}-{uuid.uuid4().hex[:8]}")
        replies = await self.scheduler.register_worker_plugin(
            plugin=dumps_pickle(plugin), name=name, idempotent=idempotent)
        return _check_replies(f"setting up plugin {name!r}", replies)

    async def register_worker_plugin(self, plugin: Any, name: str | None = None,
                                     idempotent: bool = False) -> dict[str, Any]:
        """``register_plugin``, by its older name."""
        return await self.register_plugin(plugin, name, idempotent)

    async def unregister_worker_plugin(self, name: str) -> dict[str, Any]:
        """Tear the plugin ``name`` down on every worker; joining workers no longer get it."""
        self.check_open()
        replies = await self.scheduler.unregister_worker_plugin(name=name)
        return _check_replies(f"removing plugin {name!r}", replies)

    async def upload_file(self, filename: str, load: bool = True) -> None:
        """Put a ``.py``, ``.zip`` or ``.egg`` file on every worker, now and on each that
        joins later, where tasks can import it (a ``.py`` module is imported at once, or
        reloaded if it already was, unless ``load=False``)."""
        from corral.worker.plugins import UploadFile

        data = await asyncio.to_thread(Path(filename).read_bytes)
        base = os.path.basename(filename)
        await self.register_plugin(UploadFile(base, data, load), name=f"upload-file-{base}")

    # -- datasets ----------------------------------------------------------------------------

    async def publish_dataset(self, *args: Any, name: str | None = None,
                              override: bool = False, **kwargs: Any) -> None:
        """Publish values under names, for any client to get: ``publish_dataset(x=df)``
        or ``publish_dataset(df, name="x")``. Futures inside stay alive while published."""
        self.check_open()
        if args and name is None:
            raise ValueError("positional datasets need a name=")
        if len(args) > 1:
            raise ValueError("publish one positional dataset per name")
        named = dict(kwargs)
        if args:
            named[str(name)] = args[0]
        for key, value in named.items():
            await self.requests.ask(msgs.PublishDataset, key, item=dump_item(value),
                                    override=override)

    async def get_dataset(self, name: str, default: Any = _NO_DEFAULT,
                          timeout: float | None = None) -> Any:
        """The dataset published as ``name`` (futures in it become this client's);
        ``default`` if there is none, else ``KeyError``. With ``timeout``, wait up to that
        long for it to be published."""
        self.check_open()
        try:
            reply, values = await self.requests.ask(msgs.GetDataset, name, timeout=timeout)
        except KeyError:
            if default is _NO_DEFAULT:
                raise
            return default
        if reply.outcome == "timeout":
            if default is _NO_DEFAULT:
                raise KeyError(f"no dataset named {name!r} was published within {timeout} s")
            return default
        return values[0]

    async def unpublish_dataset(self, name: str) -> None:
        """Remove a published dataset (its futures' data may then be freed)."""
        self.check_open()
        await self.requests.ask(msgs.UnpublishDataset, name)

    async def list_datasets(self) -> list[str]:
        """The names of the published datasets, sorted."""
        self.check_open()
        reply, _ = await self.requests.ask(msgs.Inspect, "", kind="dataset")
        return list(reply.value)


    # -- dask.distributed's odds and ends --------------------------------------------------

    def futures_of(self, collections: Any) -> list[Future]:
        """The futures inside ``collections``, as ``corral.futures_of`` finds them."""
        return futures_of(collections)

    async def write_scheduler_file(self, filename: str | os.PathLike[str]) -> None:
        """Write the scheduler's address and this client's credentials to ``filename``
        (a new file of mode 0600, put in place atomically), for ``Client(scheduler_file=)``
        and ``corral worker --scheduler-file`` elsewhere."""
        self.check_open()
        if self.scheduler_address is None:
            raise CorralError("the client has no scheduler yet: await it first")
        write_scheduler_file(filename, self.scheduler_address, self.security)


class ClientExtras:
    """The synchronous ``Client``'s side of ``AsyncClientExtras``."""

    _core: AsyncClient

    def _run(self, coro: Any, timeout: float | None = None, what: str = "the call") -> Any:
        raise NotImplementedError  # the Client's

    def get_versions(self, check: bool = False,
                     packages: Iterable[str] | None = None) -> dict[str, Any]:
        """See ``AsyncClient.get_versions``."""
        return self._run(self._core.get_versions(check, packages))

    def has_what(self, workers: Iterable[str] | None = None) -> dict[str, list[Hashable]]:
        """``{worker: [keys it holds]}`` for every worker (or those given)."""
        return self._run(self._core.has_what(workers))

    def processing(self, workers: Iterable[str] | None = None) -> dict[str, list[Hashable]]:
        """``{worker: [keys sent to it and not yet done]}``."""
        return self._run(self._core.processing(workers))

    def replicate(self, futures: Any, n: int | None = None,
                  workers: str | Iterable[str] | None = None, branching_factor: int = 2,
                  timeout: float = 60.0) -> None:
        """See ``AsyncClient.replicate``."""
        self._run(self._core.replicate(futures, n, workers, branching_factor, timeout))

    def nbytes(self, keys: Iterable[Any] | None = None,
               summary: bool = True) -> dict[Hashable, int]:
        """Bytes held per key, summed per key prefix with ``summary``."""
        return self._run(self._core.nbytes(keys, summary))

    def story(self, *keys: Any) -> list[dict[str, Any]]:
        """What happened to these keys (or futures), on the scheduler and the workers."""
        return self._run(self._core.story(*keys))

    def get_worker_logs(self, n: int | None = None, workers: Iterable[str] | None = None
                        ) -> dict[str, list[tuple[str, str]]]:
        """The last ``n`` (or all kept) log lines of each worker."""
        return self._run(self._core.get_worker_logs(n, workers))

    def get_scheduler_logs(self, n: int | None = None) -> list[tuple[str, str]]:
        """The last ``n`` (or all kept) log lines of the scheduler's process."""
        return self._run(self._core.get_scheduler_logs(n))

    def get_task_stream(self, start: float | None = None, stop: float | None = None,
                        count: int | None = None) -> list[dict[str, Any]]:
        """The tasks that ran (and transfers), as the scheduler's task stream has them."""
        return self._run(self._core.get_task_stream(start, stop, count))

    def register_plugin(self, plugin: Any, name: str | None = None,
                        idempotent: bool = False) -> dict[str, Any]:
        """Set a worker plugin up on every worker, now and on each that joins later."""
        return self._run(self._core.register_plugin(plugin, name, idempotent))

    def register_worker_plugin(self, plugin: Any, name: str | None = None,
                               idempotent: bool = False) -> dict[str, Any]:
        """``register_plugin``, by its older name."""
        return self._run(self._core.register_plugin(plugin, name, idempotent))

    def unregister_worker_plugin(self, name: str) -> dict[str, Any]:
        """Tear the plugin ``name`` down on every worker."""
        return self._run(self._core.unregister_worker_plugin(name))

    def upload_file(self, filename: str, load: bool = True) -> None:
        """Put a ``.py``/``.zip``/``.egg`` file on every worker, now and later."""
        self._run(self._core.upload_file(filename, load))

    def publish_dataset(self, *args: Any, name: str | None = None, override: bool = False,
                        **kwargs: Any) -> None:
        """Publish values under names, for any client to get."""
        self._run(self._core.publish_dataset(*args, name=name, override=override, **kwargs))

    def get_dataset(self, name: str, default: Any = _NO_DEFAULT,
                    timeout: float | None = None) -> Any:
        """The dataset published as ``name``; ``default`` or ``KeyError`` if none."""
        return self._run(self._core.get_dataset(name, default, timeout))

    def unpublish_dataset(self, name: str) -> None:
        """Remove a published dataset."""
        self._run(self._core.unpublish_dataset(name))

    def list_datasets(self) -> list[str]:
        """The names of the published datasets, sorted."""
        return self._run(self._core.list_datasets())

    def futures_of(self, collections: Any) -> list[Future]:
        """The futures inside ``collections``, as ``corral.futures_of`` finds them."""
        return futures_of(collections)

    def write_scheduler_file(self, filename: str | os.PathLike[str]) -> None:
        """Write the scheduler's address and this client's credentials to ``filename``."""
        self._run(self._core.write_scheduler_file(filename))

    @property
    def datasets(self) -> Datasets:
        """The published datasets as a mapping: ``client.datasets["x"] = df``."""
        return Datasets(self)


class Datasets(MutableMapping[str, Any]):
    def __init__(self, client: ClientExtras) -> None:
        self._client = client

    def __getitem__(self, name: str) -> Any:
        return self._client.get_dataset(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._client.publish_dataset(value, name=name, override=True)

    def __delitem__(self, name: str) -> None:
        self._client.unpublish_dataset(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._client.list_datasets())

    def __len__(self) -> int:
        return len(self._client.list_datasets())


class TaskStream:
    """``with get_task_stream(client) as ts: ...``: ``ts.data`` then holds the tasks that
    ran during the block."""

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._seq = 0
        self.data: list[dict[str, Any]] = []

    def _core(self) -> AsyncClient:
        from corral.client.coordination import resolve_client

        return resolve_client(self._client)

    def __enter__(self) -> TaskStream:
        core = self._core()
        self._seq = core.blocking(core.scheduler.task_stream(count=0), None)["seq"]
        return self

    def __exit__(self, *exc_info: object) -> None:
        core = self._core()
        reply = core.blocking(core.scheduler.task_stream(since=self._seq), None)
        self.data.extend(reply["records"])

    async def __aenter__(self) -> TaskStream:
        self._seq = (await self._core().scheduler.task_stream(count=0))["seq"]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        reply = await self._core().scheduler.task_stream(since=self._seq)
        self.data.extend(reply["records"])


def get_task_stream(client: Any = None) -> TaskStream:
    """Collect the tasks that run during a ``with`` (or ``async with``) block."""
    return TaskStream(client)
