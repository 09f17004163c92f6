"""corral: distributed, data-local computing for Python."""

from corral.client import AsyncClient, Client, Executor, Future, as_completed, progress, wait
from corral.client.pool import Pool
from corral.core import ConnectionPool, Server, connect, rpc
from corral.deploy import Cluster, LocalCluster
from corral.exceptions import CommClosedError, CorralError
from corral.nanny import Nanny
from corral.scheduler import Scheduler
from corral.security import Security
from corral.worker import Worker, get_worker

__version__ = "0.1.0"

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
