"""Which worker and task the current thread serves: ``get_worker()``, ``current_task()``.

A task (or a ``client.run`` call) runs on one of its worker's threads through
``run_as``, which records the worker and key for that thread; several in-process
workers (``LocalCluster(processes=False)``) each answer for their own tasks.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.worker.server import Worker

running: list[Worker] = []  # workers started in this process, newest last
# .worker: the worker whose task or run() this thread serves; .key: the task's key
_current = threading.local()


def get_worker() -> Worker:
    """The worker running this task or ``client.run`` call (else the newest in this process)."""
    worker = getattr(_current, "worker", None)
    if worker is not None:
        return worker
    if not running:
        raise ValueError("no corral worker is running in this process")
    return running[-1]


_dask_routed = False  # dask's computations in tasks go to the cluster (once dask is here)


def _route_dask() -> None:
    global _dask_routed
    _dask_routed = True
    from corral.client.defaults import route_dask_in_tasks

    route_dask_in_tasks()


def run_as(worker: Worker, fn: Callable[[], Any], key: Any = None) -> Any:
    """Call ``fn`` on this thread as ``worker``'s task ``key`` (None: a ``run`` call)."""
    _current.worker, _current.key = worker, key
    if not _dask_routed and "dask" in sys.modules:
        _route_dask()
    try:
        return fn()
    finally:
        _current.worker = _current.key = None


def current_task() -> tuple[Worker, Any] | None:
    """The worker and key of the task this thread runs (key None in ``client.run``);
    None outside tasks."""
    worker = getattr(_current, "worker", None)
    return None if worker is None else (worker, _current.key)
