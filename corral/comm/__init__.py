"""Transport layer: addresses, ``connect``, ``listen`` and the ``Comm`` interface.

Nothing here knows what a message means; see ``corral.protocol`` for that.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time

from corral import config
from corral.comm import shm, shortcut
from corral.comm.addressing import Address, format_address, normalize_address, parse_address
from corral.comm.base import (
    DEFAULT_LIMITS,
    PRE_AUTH_LIMITS,
    Backend,
    Codec,
    Comm,
    ComSink,
    Frames,
    Listener,
    RawFrames,
)
from corral.comm.framing import FrameLimits, FrameReader
from corral.comm.inproc import InprocBackend
from corral.comm.tcp import TCPBackend
from corral.comm.tls import TLSBackend
from corral.exceptions import (
    CommClosedError,
    CommError,
    ConnectTimeoutError,
    HandshakeError,
    ListenError,
)

backends: dict[str, Backend] = {"tcp": TCPBackend(), "tls": TLSBackend(), "inproc": InprocBackend()}

__all__ = [
    "DEFAULT_LIMITS",
    "PRE_AUTH_LIMITS",
    "Address",
    "Backend",
    "Codec",
    "Comm",
    "CommClosedError",
    "CommError",
    "FrameLimits",
    "FrameReader",
    "Frames",
    "ListenError",
    "Listener",
    "RawFrames",
    "connect",
    "format_address",
    "listen",
    "normalize_address",
    "parse_address",
    "shm",
]


def _backend(scheme: str) -> Backend:
    try:
        return backends[scheme]
    except KeyError:
        raise ValueError(f"no transport for scheme {scheme!r}") from None


async def connect(
    address: str,
    timeout: float = 10.0,
    limits: FrameLimits = PRE_AUTH_LIMITS,
    tls: ssl.SSLContext | None = None,
) -> Comm:
    """Open a raw comm to ``address``, retrying with backoff until ``timeout`` seconds pass.

    Raises ``ConnectTimeoutError`` (a ``TimeoutError``) naming the address and the last
    error when no attempt succeeded in time. A refused TLS handshake is not retried.
    """
    address = normalize_address(address)
    backend = _backend(parse_address(address).scheme)
    deadline = time.monotonic() + timeout
    delay = 0.01
    error: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                return await _connect_once(backend, address, limits, tls)
        except HandshakeError:
            raise  # the peer answered and said no: trying again will not change that
        except (OSError, TimeoutError) as e:
            # The last attempt, cut short by the deadline, times out: keep the telling error
            # (connection refused, unknown host) that the earlier ones met.
            if error is None or not isinstance(e, TimeoutError) or isinstance(error, TimeoutError):
                error = e
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = type(error).__name__ + (f": {error}" if str(error) else "")
            raise ConnectTimeoutError(
                f"timed out after {timeout:g}s trying to connect to {address} ({detail})"
            ) from error
        await asyncio.sleep(min(delay * (1 + random.random()), remaining))
        delay = min(delay * 2, 1.0)


async def _connect_once(
    backend: Backend, address: str, limits: FrameLimits, tls: ssl.SSLContext | None
) -> Comm:
    """One attempt: through a listener of this process if one has the address (and the
    shortcut is on), else through the backend."""
    if not address.startswith("inproc://") and config.get("comm.inproc-shortcut"):
        comm = shortcut.connect(address, limits, tls)
        if comm is not None:
            return comm
    return await backend.connect(address, limits, tls)


async def listen(
    address: str | int,
    on_comm: ComSink,
    limits: FrameLimits = PRE_AUTH_LIMITS,
    tls: ssl.SSLContext | None = None,
    shortcut_alias: bool = False,
) -> Listener:
    """Start accepting connections at ``address``; ``on_comm`` gets each new comm.

    ``shortcut_alias``: connections from this process to the listener's address go
    in-process while it is open (``corral.comm.shortcut``); tcp:// and tls:// only.
    Raises ``ListenError`` naming the address and the OS's reason (in use, unknown host)
    when it cannot listen there.
    """
    address = normalize_address(address)
    parsed = parse_address(address)
    listener = _backend(parsed.scheme).listener(address, on_comm, limits, tls)
    if shortcut_alias and parsed.scheme != "inproc":
        listener = shortcut.ShortcutListener(listener, on_comm, limits, tls, parsed.host)
    try:
        await listener.start()
    except CommError:
        raise
    except OSError as e:
        raise ListenError(f"cannot listen at {address}: {_os_reason(e)}") from e
    return listener


def _os_reason(error: OSError) -> str:
    """The OS's own words for ``error`` (``Address already in use``), without errno noise."""
    return error.strerror or str(error) or type(error).__name__
