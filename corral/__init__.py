"""corral: distributed, data-local computing for Python."""

import typing as _typing

from corral._lazy import lazy_exports as _lazy_exports

__version__ = "0.1.0"

# Each name is imported on first use, so that importing one part of corral (a pure
# state machine, the transports) does not import all of it.
_EXPORTS = {
    "AsyncClient": "corral.client.client",
    "AsyncEvent": "corral.client.coordination",
    "AsyncLock": "corral.client.coordination",
    "AsyncQueue": "corral.client.coordination",
    "AsyncSemaphore": "corral.client.coordination",
    "AsyncVariable": "corral.client.coordination",
    # dask.distributed's names for the errors a future's result() may raise:
    "CancelledError": "concurrent.futures",
    "KilledWorker": "corral.exceptions",
    "TimeoutError": "builtins",
    "Client": "corral.client.sync",
    "Cluster": "corral.deploy.cluster",
    "CommClosedError": "corral.exceptions",
    "ConnectionPool": "corral.core.rpc",
    "CorralError": "corral.exceptions",
    "Event": "corral.client.coordination",
    "Executor": "corral.client.executor",
    "Future": "corral.client.future",
    "LocalCluster": "corral.deploy.local",
    "Lock": "corral.client.coordination",
    "Nanny": "corral.nanny",
    "Pool": "corral.client.pool",
    "Queue": "corral.client.coordination",
    "Scheduler": "corral.scheduler.server",
    "Security": "corral.security",
    "Semaphore": "corral.client.coordination",
    "Server": "corral.core.server",
    "Variable": "corral.client.coordination",
    "Worker": "corral.worker.server",
    "WorkerPlugin": "corral.client.extras",
    "as_completed": "corral.client.waiting",
    "config": "corral.config",
    "connect": "corral.core.connect",
    "default_client": "corral.client.defaults",
    "futures_of": "corral.client.persist",
    "get_task_stream": "corral.client.extras",
    "fire_and_forget": "corral.client.keeping",
    "get_client": "corral.client.worker_client",
    "get_worker": "corral.worker.context",
    "performance_report": "corral.client.report",
    "progress": "corral.client.progress",
    "rejoin": "corral.worker.secession",
    "rpc": "corral.core.rpc",
    "secede": "corral.worker.secession",
    "wait": "corral.client.waiting",
    "worker_client": "corral.client.worker_client",
}
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

if _typing.TYPE_CHECKING:
    from concurrent.futures import CancelledError

    from corral import config
    from corral.client.client import AsyncClient
    from corral.client.coordination import (
        AsyncEvent,
        AsyncLock,
        AsyncQueue,
        AsyncSemaphore,
        AsyncVariable,
        Event,
        Lock,
        Queue,
        Semaphore,
        Variable,
    )
    from corral.client.defaults import default_client
    from corral.client.executor import Executor
    from corral.client.extras import WorkerPlugin, get_task_stream
    from corral.client.future import Future
    from corral.client.keeping import fire_and_forget
    from corral.client.persist import futures_of
    from corral.client.pool import Pool
    from corral.client.progress import progress
    from corral.client.report import performance_report
    from corral.client.sync import Client
    from corral.client.waiting import as_completed, wait
    from corral.client.worker_client import get_client, worker_client
    from corral.core.connect import connect
    from corral.core.rpc import ConnectionPool, rpc
    from corral.core.server import Server
    from corral.deploy.cluster import Cluster
    from corral.deploy.local import LocalCluster
    from corral.exceptions import CommClosedError, CorralError, KilledWorker
    from corral.nanny import Nanny
    from corral.scheduler import Scheduler
    from corral.security import Security
    from corral.worker import Worker, get_worker
    from corral.worker.secession import rejoin, secede

__all__ = [
    "AsyncClient",
    "AsyncEvent",
    "AsyncLock",
    "AsyncQueue",
    "AsyncSemaphore",
    "AsyncVariable",
    "CancelledError",
    "Client",
    "Cluster",
    "CommClosedError",
    "ConnectionPool",
    "CorralError",
    "Event",
    "Executor",
    "Future",
    "KilledWorker",
    "LocalCluster",
    "Lock",
    "Nanny",
    "Pool",
    "Queue",
    "Scheduler",
    "Security",
    "Semaphore",
    "Server",
    "TimeoutError",
    "Variable",
    "Worker",
    "WorkerPlugin",
    "__version__",
    "as_completed",
    "config",
    "connect",
    "default_client",
    "fire_and_forget",
    "futures_of",
    "get_client",
    "get_task_stream",
    "get_worker",
    "performance_report",
    "progress",
    "rejoin",
    "rpc",
    "secede",
    "wait",
    "worker_client",
]
