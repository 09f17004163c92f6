"""Which client dask uses: the default client, and ``client.as_current()``.

A new client becomes the default (``set_as_default=True``); closing it brings back the
one before. ``with client.as_current():`` makes a client current in this thread or
asyncio task only (a context variable). dask asks its configuration for a scheduler
before anything else (``dask.config`` key ``"scheduler"``), so while any corral client
is the default, that key holds one ``DefaultClientProxy``: not callable, a ``get`` and
a ``persist``, a class name with "Client" in it, which is how dask recognises a
client. Each call goes to whichever client is current at that moment, so
``x.compute()``, ``dask.compute(...)`` and ``x.persist()`` run on the cluster. A
``scheduler=`` argument or a ``dask.config.set(scheduler=...)`` of the user's still
wins, as with dask.distributed.

Inside a corral task (on a worker, where dask is routed here once a task runs with dask
loaded), ``x.compute()`` goes to the worker's client, the task seceded from its thread
slot meanwhile (``worker_client()``): on one-thread workers it cannot deadlock. With no
client at all, the proxy does what dask does without one (its threaded scheduler).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from corral import post_import

_lock = threading.Lock()
_defaults: list[Any] = []  # clients set as default, newest last (strong: Client() alone works)
_current: contextvars.ContextVar[Any] = contextvars.ContextVar("corral_current_client",
                                                               default=None)
_previous_scheduler: list[Any] = []  # dask's "scheduler" setting before ours went in
_shuffle_set: list[bool] = []  # whether each hook made corral's shuffle dask's default
_hook_pending: list[Callable[[], bool]] = []  # cancels the hook due when dask is imported

NO_CLIENT = ("no corral client is running: start one first, e.g. "
             "client = corral.Client() or corral.Client('tcp://scheduler:8786')")


def default_client(client: Any = None) -> Any:
    """``client`` if given, else the current client (``as_current``), else the newest
    default one; ``ValueError`` when there is none."""
    if client is not None:
        return client
    found = _current.get()
    if found is not None and not getattr(found, "closed", False):
        return found
    with _lock:
        if _defaults:
            return _defaults[-1]
    raise ValueError(NO_CLIENT)


def set_default(client: Any) -> None:
    """Make ``client`` the default (until it closes, or another one is made default)."""
    with _lock:
        if client in _defaults:
            _defaults.remove(client)
        _defaults.append(client)
        first = len(_defaults) == 1
    if first:
        _hook_dask()


def forget(client: Any) -> None:
    """``client`` is closing: the default goes back to the one before it."""
    with _lock:
        if client not in _defaults:
            return
        _defaults.remove(client)
        last = not _defaults
    if last:
        _unhook_dask()


@contextlib.contextmanager
def as_current(client: Any) -> Iterator[Any]:
    """Make ``client`` the one dask and ``default_client()`` use, in this context."""
    token = _current.set(client)
    try:
        with _hooked():
            yield client
    finally:
        _current.reset(token)


class DefaultClientProxy:
    """What dask finds in its ``"scheduler"`` setting: the current corral client's
    ``get`` and ``persist``. Named *Client* because that is how dask tells a client from
    a scheduler function."""

    @property
    def asynchronous(self) -> bool:
        client = _client_here()
        return client is not None and bool(client.asynchronous)

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        if _in_task():
            from corral.client.worker_client import worker_client

            with worker_client() as client:  # seceded while the cluster computes
                return client.get(dsk, keys, **kwargs)
        client = _client_here()
        if client is None:
            import dask.threaded

            return dask.threaded.get(dsk, keys, **kwargs)
        return client.get(dsk, keys, **kwargs)

    def persist(self, collections: Any, **kwargs: Any) -> Any:
        client = _client_here()
        if client is None:
            from dask.base import persist

            return list(persist(*collections, scheduler="threads", **kwargs))
        return client.persist(collections, **kwargs)

    def __repr__(self) -> str:
        return "<the default corral client>"


SCHEDULER = DefaultClientProxy()


def _in_task() -> bool:
    """Whether this thread runs a corral task (on a worker)."""
    if "corral.worker.context" not in sys.modules:
        return False
    from corral.worker.context import current_task

    return current_task() is not None


def _client_here() -> Any:
    """The client dask's work goes to from here: in a task, the worker's; else the
    current or default one; None if there is none."""
    if _in_task():
        from corral.client.worker_client import get_client

        return get_client()
    try:
        return default_client()
    except ValueError:
        return None


def route_dask_in_tasks() -> None:
    """In a worker's process, once dask is loaded: dask's computations inside tasks go
    to the cluster, unless dask's scheduler setting says otherwise."""
    config = _dask_config()
    if config is not None and config.config.get("scheduler") is None:
        config.set(scheduler=SCHEDULER)
        _default_shuffle(config)


def _default_shuffle(config: Any) -> bool:
    """Make corral's peer-to-peer shuffle dask's default dataframe shuffle, unless one is
    configured already (``corral.shuffle``); whether it did."""
    if config.get("dataframe.shuffle.method", None) is not None:
        return False
    from corral.shuffle import METHOD, lowering

    if not lowering.enable():
        return False
    config.set({"dataframe.shuffle.method": METHOD})
    return True


@contextlib.contextmanager
def corral_shuffles() -> Iterator[None]:
    """In this block dask lowers dataframe shuffles to corral's, unless a method is
    configured (for a client that is not dask's default: ``client.persist``)."""
    config = _dask_config()
    if config is None or not _default_shuffle(config):
        yield
        return
    try:
        yield
    finally:
        _undefault_shuffle(config)


def _undefault_shuffle(config: Any) -> None:
    from corral.shuffle import METHOD

    if config.get("dataframe.shuffle.method", None) == METHOD:
        config.set({"dataframe.shuffle.method": None})


def _dask_config() -> Any:
    """dask.config, if dask is installed (imported here only then)."""
    if importlib.util.find_spec("dask") is None:
        return None
    import dask.config

    return dask.config


def _hook_dask() -> None:
    if "dask.config" not in sys.modules:
        # Not imported (yet): hook it once it is, rather than pay for importing it here.
        if importlib.util.find_spec("dask") is not None:
            _hook_pending.append(post_import.when_imported("dask.config", _hook_imported))
        return
    _hook_imported(sys.modules["dask.config"])


def _hook_imported(config: Any) -> None:
    with _lock:
        if _hook_pending:  # run by the import: no longer pending
            _hook_pending.clear()
        elif not _defaults:
            return  # the last default client closed while dask was being imported
    _previous_scheduler.append(config.config.get("scheduler"))
    config.set(scheduler=SCHEDULER)
    _shuffle_set.append(_default_shuffle(config))


def _unhook_dask() -> None:
    with _lock:
        cancel = _hook_pending.pop() if _hook_pending else None
    if cancel is not None and cancel():
        return  # dask was never imported: nothing was changed in it
    config = _dask_config()
    if config is not None and _previous_scheduler:
        previous = _previous_scheduler.pop()
        if _shuffle_set and _shuffle_set.pop():
            _undefault_shuffle(config)
        if config.config.get("scheduler") is SCHEDULER:
            if previous is None:
                config.config.pop("scheduler", None)
            else:
                config.set(scheduler=previous)


@contextlib.contextmanager
def _hooked() -> Iterator[None]:
    """dask's scheduler setting points at ``SCHEDULER`` in this block, whatever it was."""
    config = _dask_config()
    if config is None or config.config.get("scheduler") is SCHEDULER:
        yield
        return
    with config.set(scheduler=SCHEDULER):
        if not _default_shuffle(config):
            yield
            return
        try:
            yield
        finally:
            _undefault_shuffle(config)
