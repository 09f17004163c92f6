"""corral: distributed, data-local computing for Python."""

from corral.core import ConnectionPool, Server, connect, rpc
from corral.exceptions import CommClosedError, CorralError
from corral.security import Security

__version__ = "0.1.0"

__all__ = [
    "CommClosedError",
    "ConnectionPool",
    "CorralError",
    "Security",
    "Server",
    "__version__",
    "connect",
    "rpc",
]
