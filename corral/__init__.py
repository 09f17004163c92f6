"""corral: distributed, data-local computing for Python.

The names below are imported on first use (PEP 562), so that a process that needs one
part — a worker, a nanny — does not pay for importing all of them: a restarted worker
is back sooner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "AsyncClient": "corral.client",
    "Client": "corral.client",
    "Executor": "corral.client",
    "Future": "corral.client",
    "as_completed": "corral.client",
    "progress": "corral.client",
    "wait": "corral.client",
    "Pool": "corral.client.pool",
    "ConnectionPool": "corral.core",
    "Server": "corral.core",
    "connect": "corral.core",
    "rpc": "corral.core",
    "Cluster": "corral.deploy",
    "LocalCluster": "corral.deploy",
    "CommClosedError": "corral.exceptions",
    "CorralError": "corral.exceptions",
    "Nanny": "corral.nanny",
    "Scheduler": "corral.scheduler",
    "Security": "corral.security",
    "Worker": "corral.worker",
    "get_worker": "corral.worker",
}

__all__ = [
    "AsyncClient",
    "Client",
    "Cluster",
    "CommClosedError",
    "ConnectionPool",
    "CorralError",
    "Executor",
    "Future",
    "LocalCluster",
    "Nanny",
    "Pool",
    "Scheduler",
    "Security",
    "Server",
    "Worker",
    "__version__",
    "as_completed",
    "connect",
    "get_worker",
    "progress",
    "rpc",
    "wait",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


if TYPE_CHECKING:
    from corral.client import AsyncClient, Client, Executor, Future, as_completed, progress, wait
    from corral.client.pool import Pool
    from corral.core import ConnectionPool, Server, connect, rpc
    from corral.deploy import Cluster, LocalCluster
    from corral.exceptions import CommClosedError, CorralError
    from corral.nanny import Nanny
    from corral.scheduler import Scheduler
    from corral.security import Security
    from corral.worker import Worker, get_worker
