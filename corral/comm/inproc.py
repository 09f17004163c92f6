"""In-process transport: two queues, no sockets; for fast tests and in-process workers.

Frames still go through the codec (so what works here works over TCP) and mutable
buffers are copied on the way, so the two ends never share memory by accident.
Both ends may live on different event loops; delivery then crosses threads safely.

A comm made ``by_reference`` (the in-process shortcut's: ``corral.comm.shortcut``) hands
messages over as the codec's ``copy`` of them once the handshake has installed a codec
that has one: no frames, the same value the peer would decode (``MUST_ENCODE``: frames
after all). Before that, and on plain ``inproc://`` comms, everything is frames.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import threading
from collections import deque
from collections.abc import Awaitable
from typing import Any

from corral.comm.base import MUST_ENCODE, Backend, Comm, ComSink, Frames, Listener
from corral.comm.framing import FrameLimits, frame_nbytes
from corral.exceptions import CommClosedError, ListenError, ProtocolError

_listeners: dict[str, InprocListener] = {}
_lock = threading.Lock()
_counter = itertools.count(1)


class InprocComm(Comm):
    def __init__(
        self,
        local_address: str,
        peer_address: str,
        limits: FrameLimits,
        loop: asyncio.AbstractEventLoop | None = None,
        by_reference: bool = False,
    ) -> None:
        super().__init__(limits)
        self.local_address = local_address
        self.peer_address = peer_address
        self.peer: InprocComm | None = None
        self.by_reference = by_reference
        self._loop = loop or asyncio.get_running_loop()
        self._inbox: deque[Frames | _Handed] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    async def _next(self) -> Frames | _Handed:
        while not self._inbox:
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    async def read_frames(self) -> Frames:
        item = await self._next()
        if isinstance(item, _Handed):  # only after the handshake, read with ``read``
            raise ProtocolError("a message came where frames were expected")
        return item

    async def read(self) -> Any:
        item = await self._next()
        return item.msg if isinstance(item, _Handed) else self.codec.decode(item)

    async def write(self, msg: Any) -> None:
        if not self._hand_over(msg):
            await super().write(msg)

    def write_nowait(self, msg: Any) -> Awaitable[None] | None:
        if self._hand_over(msg):
            return None
        return super().write_nowait(msg)

    def _hand_over(self, msg: Any) -> bool:
        """Deliver the codec's copy of ``msg`` if this comm may and the codec can."""
        copy = getattr(self.codec, "copy", None) if self.by_reference else None
        if copy is None:
            return False
        handed = copy(msg)
        if handed is MUST_ENCODE:
            return False
        peer = self._open_peer()
        self.messages_written += 1
        peer._call(peer._deliver, _Handed(handed))
        return True

    async def write_frames(self, frames: Frames) -> None:
        self.write_frames_nowait(frames)

    def _open_peer(self) -> InprocComm:
        peer = self.peer
        if self._error is not None:
            raise CommClosedError(f"{self._error} (peer {self.peer_address})")
        if peer is None:
            raise CommClosedError(f"comm to {self.peer_address} is closed")
        if peer._error is not None:
            raise CommClosedError(f"peer {self.peer_address} closed the comm")
        return peer

    def write_frames_nowait(self, frames: Frames) -> bool:
        peer = self._open_peer()
        # Mutable buffers become the receiver's own (writable, as over TCP).
        frames = [f if isinstance(f, bytes) else bytearray(f) for f in frames]
        try:
            peer.limits.check([frame_nbytes(f) for f in frames])
        except ProtocolError as e:
            peer._call(peer._end, e)
            self._end(CommClosedError(f"peer {self.peer_address} rejected a message: {e}"))
            raise self._error from e  # type: ignore[misc]
        peer._call(peer._deliver, frames)
        return True

    def _call(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _deliver(self, item: Frames | _Handed) -> None:
        if self._error is None:
            self._inbox.append(item)
            self._wake()

    def _end(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self._error is None:
            self._end(CommClosedError("comm closed"))
            if self.peer is not None:
                self.peer._call(self.peer._end, CommClosedError("connection closed by peer"))

    def closed(self) -> bool:
        return self._error is not None


class _Handed:
    """A message handed over as an object (``by_reference``), not as frames."""

    __slots__ = ("msg",)

    def __init__(self, msg: Any) -> None:
        self.msg = msg


class InprocListener(Listener):
    def __init__(self, address: str, on_comm: ComSink, limits: FrameLimits,
                 by_reference: bool = False) -> None:
        location = address.removeprefix("inproc://")
        self.address = f"inproc://{location or f'{os.getpid()}/{next(_counter)}'}"
        self._on_comm = on_comm
        self.limits = limits
        self.by_reference = by_reference  # its comms: see the module's docstring
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self) -> None:
        """Serve connections on the running loop, without being reachable by address
        (the in-process shortcut reaches it through ``connect_to``)."""
        self.loop = asyncio.get_running_loop()

    async def start(self) -> None:
        self.bind_loop()
        with _lock:
            if self.address in _listeners:
                raise ListenError(f"cannot listen at {self.address}: it is already in use")
            _listeners[self.address] = self

    async def stop(self) -> None:
        with _lock:
            if _listeners.get(self.address) is self:
                del _listeners[self.address]

    def accept(self, client: InprocComm) -> InprocComm:
        """Make the server end of a new connection (on this listener's loop)."""
        assert self.loop is not None
        server = InprocComm(self.address, client.local_address, self.limits, loop=self.loop,
                            by_reference=self.by_reference)
        server.peer, client.peer = client, server
        client.by_reference = self.by_reference
        self.loop.call_soon_threadsafe(self._on_comm, server)
        return server


def new_address() -> str:
    """A fresh inproc:// address for one end of a connection."""
    return f"inproc://{os.getpid()}/{next(_counter)}"


def connect_to(
    listener: InprocListener, limits: FrameLimits, local_address: str | None = None
) -> InprocComm:
    """A new connection to ``listener``, whose loop may be another thread's."""
    client = InprocComm(local_address or new_address(), listener.address, limits)
    listener.accept(client)
    return client


class InprocBackend(Backend):
    async def connect(
        self, address: str, limits: FrameLimits, tls: ssl.SSLContext | None = None
    ) -> Comm:
        with _lock:
            listener = _listeners.get(address)
        if listener is None:
            raise ConnectionRefusedError(f"no inproc listener at {address}")
        return connect_to(listener, limits)

    def listener(
        self, address: str, on_comm: ComSink, limits: FrameLimits,
        tls: ssl.SSLContext | None = None,
    ) -> Listener:
        return InprocListener(address, on_comm, limits)
