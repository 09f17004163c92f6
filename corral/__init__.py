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
    "connect": "corral.core.connect",
    "fire_and_forget": "corral.client.keeping",
    "get_client": "corral.client.worker_client",
    "get_worker": "corral.worker.server",
    "progress": "corral.client.progress",
    "rejoin": "corral.worker.secession",
    "rpc": "corral.core.rpc",
    "secede": "corral.worker.secession",
    "wait": "corral.client.waiting",
    "worker_client": "corral.client.worker_client",
}
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

if _typing.TYPE_CHECKING:
    from corral.client.client import AsyncClient
    from corral.client.executor import Executor
    from corral.client.future import Future
    from corral.client.keeping import fire_and_forget
    from corral.client.pool import Pool
    from corral.client.progress import progress
    from corral.client.sync import Client
    from corral.client.waiting import as_completed, wait
    from corral.client.worker_client import get_client, worker_client
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
    from corral.worker.secession import rejoin, secede

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
    "fire_and_forget",
    "get_client",
    "get_worker",
    "progress",
    "rejoin",
    "rpc",
    "secede",
    "wait",
    "worker_client",
]
