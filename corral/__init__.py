"""corral: distributed, data-local computing for Python."""

from corral.client import AsyncClient, Client, Future, as_completed, progress, wait
from corral.client.pool import Pool
from corral.core import ConnectionPool, Server, connect, rpc
from corral.deploy import Cluster, LocalCluster
from corral.exceptions import CommClosedError, CorralError
from corral.scheduler import Scheduler
from corral.security import Security
from corral.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "Cluster",
    "CommClosedError",
    "ConnectionPool",
    "CorralError",
    "Future",
    "LocalCluster",
    "Pool",
    "Scheduler",
    "Security",
    "Server",
    "Worker",
    "__version__",
    "as_completed",
    "connect",
    "progress",
    "rpc",
    "wait",
]
