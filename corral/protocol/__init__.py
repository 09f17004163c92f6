"""Protocol layer: messages to frames (``MessageCodec``) and the connection handshake."""

from corral.protocol.handshake import (
    PROTOCOL_VERSION,
    ConnectionOptions,
    client_handshake,
    server_handshake,
)
from corral.protocol.serialize import MessageCodec, dumps_pickle, loads_pickle

__all__ = [
    "PROTOCOL_VERSION",
    "ConnectionOptions",
    "MessageCodec",
    "client_handshake",
    "dumps_pickle",
    "loads_pickle",
    "server_handshake",
]
