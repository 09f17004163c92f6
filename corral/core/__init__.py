"""The foundation: ``Server``, ``rpc``, ``connect``, ``ConnectionPool``, ``BatchedSend``."""

from corral.comm import Comm
from corral.core.batched import BatchedSend
from corral.core.connect import connect
from corral.core.remote_errors import ErrorReply
from corral.core.rpc import ConnectionPool, rpc, send_recv
from corral.core.server import Server
from corral.exceptions import CommClosedError, RemoteError

__all__ = [
    "BatchedSend",
    "Comm",
    "CommClosedError",
    "ConnectionPool",
    "ErrorReply",
    "RemoteError",
    "Server",
    "connect",
    "rpc",
    "send_recv",
]
