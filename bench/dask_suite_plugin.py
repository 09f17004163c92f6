"""A pytest plugin that runs dask's own collection tests on a corral cluster.

``python -m pytest -p dask_suite_plugin <dask test file>`` (with ``bench/`` on the
path) starts one ``corral.Client`` (2 worker processes x 1 thread) and routes every
compute dask's tests ask of one of dask's own local schedulers (``None``, ``"sync"``,
``"threads"``, ...) to it: ``dask.array.utils.assert_eq`` computes with
``scheduler="sync"``, so the client being dask's default alone would not reach those.
A scheduler a test passes as a function stays its own. ``bench/dask_suite.py`` runs a
file with and without this plugin and compares the outcomes.
"""

from __future__ import annotations

from typing import Any

import dask.base

_client: Any = None
_LOCAL = {None, "sync", "synchronous", "single-threaded", "threads", "threading",
          "processes", "multiprocessing"}


def pytest_configure(config: Any) -> None:
    global _client
    from corral import Client

    _client = Client(n_workers=2, threads_per_worker=1, dashboard_address=None)
    original = dask.base.get_scheduler

    def get_scheduler(get: Any = None, scheduler: Any = None, collections: Any = None,
                      cls: Any = None) -> Any:
        if get is None and (scheduler in _LOCAL if isinstance(scheduler, str | None)
                            else False):
            return _client.get
        return original(get=get, scheduler=scheduler, collections=collections, cls=cls)

    dask.base.get_scheduler = get_scheduler


def pytest_unconfigure(config: Any) -> None:
    if _client is not None:
        _client.close()
