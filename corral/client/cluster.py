"""A client and its cluster: the arguments of the ``LocalCluster`` a client starts
(``Client(n_workers=4, memory_limit="2GiB")``, as dask's ``Client`` takes them), and
waiting for workers to join."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.client.client import AsyncClient

POLL_INTERVAL = 0.05  # seconds between looks at the scheduler's workers


def cluster_arguments(
    address: object, cluster_options: dict[str, Any] | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments for the ``LocalCluster`` a client starts: ``cluster_options``
    and the cluster arguments given to the client itself. Refuses them (``TypeError``)
    when the client connects to an existing scheduler, and names no argument that no
    cluster takes."""
    if kwargs and address is not None:
        raise TypeError(
            f"Client() got cluster arguments ({', '.join(sorted(kwargs))}) and an address: "
            "they configure the LocalCluster a client starts when given no address")
    unknown = sorted(set(kwargs) - _accepted())
    if unknown:
        raise TypeError(f"Client() got an unexpected keyword argument {unknown[0]!r}")
    return {**(cluster_options or {}), **kwargs}


def _accepted() -> set[str]:
    """Keyword arguments a ``LocalCluster`` takes, its scheduler's included."""
    from corral.deploy.local import LocalCluster
    from corral.scheduler import Scheduler
    from corral.scheduler.state import SchedulerState

    names: set[str] = set()
    for fn in (LocalCluster.__init__, Scheduler.__init__, SchedulerState.__init__):
        names.update(name for name, p in inspect.signature(fn).parameters.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return names - {"self", "asynchronous", "security"}


async def wait_for_workers(client: AsyncClient, n: int, timeout: float | None) -> None:
    """Return once the scheduler has at least ``n`` workers; ``TimeoutError`` after
    ``timeout`` seconds (None: wait as long as it takes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        count = len(await client.nthreads())
        if count >= n:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"only {count} of {n} workers joined within {timeout} s")
        await asyncio.sleep(POLL_INTERVAL)
