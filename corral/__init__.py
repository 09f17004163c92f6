"""corral: distributed, data-local computing for Python."""

import typing as _typing

from corral._lazy import lazy_exports as _lazy_exports

__version__ = "0.1.0"

# Each name is imported on first use, so that importing one part of corral (a pure
# state machine, the transports) does not import all of it.
_EXPORTS = {
    "AsyncClient": "corral.client.client",
    "Client": "corral.client.sync",
    "Cluster": "corral.deploy.cluster",
    "CommClosedError": "corral.exceptions",
    "ConnectionPool": "corral.core.rpc",
    "CorralError": "corral.exceptions",
    "Executor": "corral.client.executor",
    "Future": "corral.client.future",
    "LocalCluster": "corral.deploy.local",
    "Nanny": "corral.nanny",
    "Pool": "corral.client.pool",
    "Scheduler": "corral.scheduler.server",
    "Security": "corral.security",
    "Server": "corral.core.server",
    "Worker": "corral.worker.server",
    "as_completed": "corral.client.waiting",
    "config": "corral.config",
    "connect": "corral.core.connect",
    "default_client": "corral.client.defaults",
    "futures_of": "corral.client.persist",
    "get_worker": "corral.worker.server",
    "progress": "corral.client.progress",
    "rpc": "corral.core.rpc",
    "wait": "corral.client.waiting",
}
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

if _typing.TYPE_CHECKING:
    from corral import config
    from corral.client.client import AsyncClient
    from corral.client.defaults import default_client
    from corral.client.executor import Executor
    from corral.client.future import Future
    from corral.client.persist import futures_of
    from corral.client.pool import Pool
    from corral.client.progress import progress
    from corral.client.sync import Client
    from corral.client.waiting import as_completed, wait
    from corral.core.connect import connect
    from corral.core.rpc import ConnectionPool, rpc
    from corral.core.server import Server
    from corral.deploy.cluster import Cluster
    from corral.deploy.local import LocalCluster
    from corral.exceptions import CommClosedError, CorralError
    from corral.nanny import Nanny
    from corral.scheduler import Scheduler
    from corral.security import Security
    from corral.worker import Worker, get_worker

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
    "config",
    "connect",
    "default_client",
    "futures_of",
    "get_worker",
    "progress",
    "rpc",
    "wait",
]
