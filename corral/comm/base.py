"""The transport interface: ``Comm`` (one connection) and ``Listener``.

A transport moves *messages*, each a list of byte frames, and knows nothing of what
they mean. A ``Codec`` installed on the comm turns Python objects into frames and back;
the protocol layer installs one after the handshake. Until then a comm carries raw
frame lists.
"""

from __future__ import annotations

import abc
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from corral.comm.framing import FrameLimits

# Limits in force before the handshake has authenticated the peer.
PRE_AUTH_LIMITS = FrameLimits(max_frames=4, max_frame_bytes=64 * 1024, max_message_bytes=64 * 1024)
DEFAULT_LIMITS = FrameLimits()

Frames = list[Any]  # bytes-like objects


class Codec(Protocol):
    def encode(self, msg: Any) -> Frames: ...

    def decode(self, frames: Frames) -> Any: ...


# A codec may also offer ``copy(msg)``: what ``decode(encode(msg))`` would give, made
# without frames, for a peer in the same process; or this, when ``msg`` must be encoded.
MUST_ENCODE: Any = object()


class RawFrames:
    """The identity codec: a message is a list of bytes-like frames."""

    def encode(self, msg: Frames) -> Frames:
        return list(msg)

    def decode(self, frames: Frames) -> Frames:
        return frames


class Comm(abc.ABC):
    """One connection to a peer; ``read``/``write`` whole messages.

    A closed or vanished peer makes ``read`` and ``write`` raise ``CommClosedError``.
    One reader and one writer at a time.
    """

    codec: Codec
    peer_address: str
    local_address: str

    def __init__(self, limits: FrameLimits) -> None:
        self.codec = RawFrames()
        self.limits = limits
        self.peer_info: dict[str, Any] = {}  # role and name, filled in by the handshake
        self.messages_written = 0
        # Set by a listener that accepted this connection only so the peer can be told
        # why it cannot be served (e.g. plaintext on a TLS port); the handshake says it.
        self.refused: str | None = None

    async def read(self) -> Any:
        return self.codec.decode(await self.read_frames())

    async def write(self, msg: Any) -> None:
        frames = self.codec.encode(msg)
        self.messages_written += 1
        await self.write_frames(frames)

    def write_nowait(self, msg: Any) -> Awaitable[None] | None:
        """Write ``msg`` now if the transport takes it without waiting (None); else an
        awaitable that finishes the write (it was encoded once, here). One writer at a
        time, as for ``write``: not while an earlier write is still awaited."""
        frames = self.codec.encode(msg)
        self.messages_written += 1
        if self.write_frames_nowait(frames):
            return None
        return self.write_frames(frames)

    def write_frames_nowait(self, frames: Frames) -> bool:
        """Write ``frames`` if that needs no waiting (True); else write nothing (False).
        Raises ``CommClosedError`` once the comm is closed. Transports that can't say
        keep this default, and every write goes through ``write_frames``."""
        return False

    @property
    def limits(self) -> FrameLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: FrameLimits) -> None:
        self._limits = limits

    def can_share(self) -> bool:
        """Whether large frames could travel beside this comm in shared memory."""
        return False

    def sends_shared(self, nbytes: int) -> bool:
        """Whether a frame of ``nbytes`` written now would travel in shared memory."""
        return False

    def attach_shared(self, channel: Any) -> bool:
        """Carry large frames through ``channel`` (a ``shm.SharedChannel``) from now on;
        False if this comm cannot."""
        return False

    @abc.abstractmethod
    async def read_frames(self) -> Frames: ...

    @abc.abstractmethod
    async def write_frames(self, frames: Frames) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what was written, then close."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, dropping unsent data."""

    @abc.abstractmethod
    def closed(self) -> bool: ...

    def __repr__(self) -> str:
        state = "closed" if self.closed() else "open"
        return f"<{type(self).__name__} {self.local_address} -> {self.peer_address} {state}>"


ComSink = Callable[[Comm], None]  # called for each accepted comm; must not block


class Listener(abc.ABC):
    """Accepts connections and hands each new ``Comm`` to a callback."""

    address: str  # where peers can reach it, with the real port

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...


class Backend(abc.ABC):
    """One transport (tcp, inproc, ...), looked up by the address scheme."""

    @abc.abstractmethod
    async def connect(
        self, address: str, limits: FrameLimits, tls: ssl.SSLContext | None = None
    ) -> Comm:
        """One connection attempt; raises ``OSError`` on failure.

        ``tls`` is used by transports that encrypt (``tls://``) and ignored by the rest.
        """

    @abc.abstractmethod
    def listener(
        self, address: str, on_comm: ComSink, limits: FrameLimits,
        tls: ssl.SSLContext | None = None,
    ) -> Listener: ...
