"""``connect``: a transport connection plus the handshake, ready to carry objects."""

from __future__ import annotations

import asyncio
import time

from corral import comm as transport
from corral import config
from corral.comm import DEFAULT_LIMITS, Comm, FrameLimits, shm
from corral.exceptions import CommClosedError, CommError, ConnectTimeoutError, HandshakeError
from corral.protocol import ConnectionOptions, client_handshake
from corral.security import Security


async def connect(
    address: str,
    timeout: float | None = None,
    *,
    security: Security | None = None,
    name: str = "",
    role: str = "client",
    compression: str | None = None,
    limits: FrameLimits = DEFAULT_LIMITS,
    share_memory: bool | None = None,
) -> Comm:
    """Connect to a corral server and complete the handshake within ``timeout`` seconds.

    Connection attempts are retried with backoff; a refused handshake (wrong token,
    version mismatch) is not, and raises its ``HandshakeError`` at once. ``timeout=None``:
    ``comm.connect-timeout`` from ``corral.config``. ``share_memory`` (None:
    ``comm.shared-memory.enabled``) asks a server on this host that offers it for a
    shared-memory side channel for large frames (``corral.comm.shm``).
    """
    timeout = config.fallback(timeout, "comm.connect-timeout")
    deadline = time.monotonic() + timeout
    tls = security.ssl_context(server_side=False) if security else None
    comm = await transport.connect(address, timeout=timeout, tls=tls)
    options = ConnectionOptions(
        security=security, role=role, name=name, compression=compression, limits=limits,
        share_memory=shm.enabled() if share_memory is None else share_memory,
    )
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.5)):
            await client_handshake(comm, options)
    except TimeoutError:
        comm.abort()
        raise ConnectTimeoutError(
            f"timed out after {timeout:g}s during the handshake with {address}"
        ) from None
    except BaseException as e:
        comm.abort()
        if isinstance(e, CommError) or not isinstance(e, Exception):
            raise  # cancellation and interrupts stay what they are
        if isinstance(e, OSError):  # the connection failed, not the peer's answer
            raise CommClosedError(f"handshake with {address} failed: {e}") from e
        raise HandshakeError(f"handshake with {address} failed: {e}") from e
    return comm
