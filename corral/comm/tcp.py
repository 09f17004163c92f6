"""TCP transport on asyncio's ``BufferedProtocol``.

Reads land in ``FrameReader``'s buffers (large frames straight into their final
buffer); writes pass all frames of a message to the transport at once, so a small
message is one ``send`` and a large one is written scatter-gather where the event loop
supports it (uvloop does; CPython 3.11's selector loop joins the pieces first).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections import deque
from typing import Any

from corral import config, utils
from corral.comm.addressing import format_address, parse_address
from corral.comm.base import Backend, Comm, ComSink, Frames, Listener
from corral.comm.framing import (
    FrameLimits,
    FrameReader,
    SharedFrame,
    SharedFrames,
    encode_header,
    frame_nbytes,
)
from corral.comm.shm import SharedChannel
from corral.exceptions import CommClosedError, ProtocolError

logger = logging.getLogger("corral.comm")

TLS_HANDSHAKE_START = b"\x16\x03"  # a TLS record of type handshake, version 3.x
# A stream that does not frame correctly, by how it starts: say what the peer probably is.
_FOREIGN_STARTS = (
    (TLS_HANDSHAKE_START, "peer began a TLS handshake on a plaintext (tcp://) port"),
    (b"HTTP/", "the peer answered in HTTP: it is a web server (probably a corral dashboard), "
               "not a corral scheduler or worker port"),
    *((method, "peer sent an HTTP request to a corral port (a browser? the dashboard "
               "has its own port)") for method in (b"GET ", b"POST ", b"HEAD ", b"PUT ")),
)
SMALL_MESSAGE = 64 * 1024  # below this, frames are joined into one write
MAX_QUEUED_MESSAGES = 64  # stop reading from a peer whose messages nobody consumes
READ_CHUNK = 1 << 22  # bytes read per loop callback at most, so big frames share the loop
# (4 MiB: ~0.5 ms of copying; 1 MiB cost 100 MB transfers ~10 % in an A/B, 16 MiB no better)
# A peer behind a dead link sends no FIN: keepalive probes find it while we only read
# (idle 10 s, then 3 probes 5 s apart), the user timeout while our data goes unacked.
KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 30_000}


class _FrameProtocol(asyncio.BufferedProtocol):
    def __init__(self, limits: FrameLimits, on_connected: Any = None) -> None:
        self.reader = FrameReader(limits)
        self.transport: asyncio.Transport | None = None
        self.inbox: deque[Frames] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.error: Exception | None = None  # why the stream ended, once it has
        self.closed_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.drain_waiter: asyncio.Future[None] | None = None
        self.paused_reading = False
        self._on_connected = on_connected
        self._buffer = memoryview(b"")
        self._received = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in KEEPALIVE.items():
                if hasattr(socket, option):  # Linux has all four; others vary
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
            # Within a host, a small send buffer has the sender wait for the reader every
            # few hundred KiB, so both copy at once; with the kernel's (grown to 4 MiB)
            # the reader waited for the sender's copy: worker fetches of 10 MB went from
            # 1.6 to 2.5 GB/s, of 500 MB from 3.0 to 4.8 (docs/foundation.md).
            send_buffer = utils.parse_bytes(config.get("comm.local-send-buffer"))
            if send_buffer and _within_this_host(sock):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        if self._on_connected is not None:
            self._on_connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # At most READ_CHUNK per callback: a large frame arriving at once would otherwise
        # hold the loop for the whole copy into fresh memory (>0.1 s for 8 MB on slow VMs).
        self._buffer = self.reader.get_buffer()[:READ_CHUNK]
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        first_bytes = bytes(self._buffer[:min(nbytes, 8)]) if not self._received else b""
        self._received = True
        try:
            messages = self.reader.buffer_updated(nbytes)
        except ProtocolError as e:
            self._fail(next((ProtocolError(why) for start, why in _FOREIGN_STARTS
                             if first_bytes.startswith(start)), e))
            return
        except (MemoryError, OSError) as e:  # no memory for a large frame's buffer
            error = CommClosedError(f"no memory for an incoming message: "
                                    f"{type(e).__name__}: {e}")
            logger.warning("closing connection from %s: %s", self._peer(), error)
            self._fail(error)
            return
        if messages:
            self.inbox.extend(messages)
            self._wake()
            if len(self.inbox) >= MAX_QUEUED_MESSAGES and not self.paused_reading:
                self.paused_reading = True
                assert self.transport is not None
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._end(CommClosedError("connection closed by peer"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed"
        self._end(CommClosedError(reason))
        if not self.closed_future.done():
            self.closed_future.set_result(None)
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self.drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        self.drain_waiter = None

    def _fail(self, error: Exception) -> None:
        """End the stream, which cannot be trusted or followed any more, at once."""
        self._end(error)
        assert self.transport is not None
        self.transport.abort()

    def _peer(self) -> str:
        return str(self.transport.get_extra_info("peername") if self.transport else None)

    def _end(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def resume_if_paused(self) -> None:
        if len(self.inbox) < MAX_QUEUED_MESSAGES // 2:
            self.paused_reading = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()


class TCPComm(Comm):
    def __init__(self, protocol: _FrameProtocol, scheme: str = "tcp") -> None:
        # A peer that takes none of our bytes for this long is gone.
        self.write_stall_timeout: float = config.get("comm.write-stall-timeout")
        self._protocol = protocol
        super().__init__(protocol.reader.limits)
        transport = protocol.transport
        assert transport is not None
        self._transport = transport
        self.peer_address = _sockname_address(scheme, transport.get_extra_info("peername"))
        self.local_address = _sockname_address(scheme, transport.get_extra_info("sockname"))
        self.shared: SharedChannel | None = None  # large frames through shared memory

    def can_share(self) -> bool:
        return True

    def sends_shared(self, nbytes: int) -> bool:
        return self._goes_shared([nbytes])

    def attach_shared(self, channel: SharedChannel) -> bool:
        if self.closed() or self.shared is not None:
            return False
        self.shared = channel
        self._protocol.reader.shared = True
        return True

    def _close_shared(self) -> None:
        if self.shared is not None:
            self.shared.close()

    @property
    def limits(self) -> FrameLimits:
        return self._protocol.reader.limits

    @limits.setter
    def limits(self, limits: FrameLimits) -> None:
        self._protocol.reader.limits = limits

    async def read_frames(self) -> Frames:
        p = self._protocol
        while not p.inbox:
            if p.error is not None:
                self._close_shared()
                raise _closed_error(p.error, self.peer_address)
            if p.waiter is not None:
                raise RuntimeError("another coroutine is already reading from this comm")
            p.waiter = asyncio.get_running_loop().create_future()
            try:
                await p.waiter
            finally:
                p.waiter = None
        frames = p.inbox.popleft()
        if p.paused_reading:
            p.resume_if_paused()
        if type(frames) is SharedFrames:
            return await self._resolve_shared(frames)
        return frames

    async def _resolve_shared(self, frames: Frames) -> Frames:
        """The message with its shared frames mapped, in order."""
        channel = self.shared
        if channel is None:  # pragma: no cover - the reader refuses them without one
            raise CommClosedError("shared frame on a comm without a side channel")
        try:
            return [await channel.take(f.nbytes) if type(f) is SharedFrame else f
                    for f in frames]
        except CommClosedError as e:
            raise _closed_error(e, self.peer_address) from None

    def write_frames_nowait(self, frames: Frames) -> bool:
        self._check_open()
        if self._protocol.drain_waiter is not None:  # the peer is behind: wait in write_frames
            return False
        if _small(frames):
            self._write_small(frames[0])
            return True
        lengths = [frame_nbytes(f) for f in frames]
        if self._goes_shared(lengths):
            return False  # placing frames in shared memory may wait
        self._write(frames, lengths, sum(lengths))
        return True

    def _check_open(self) -> None:
        p = self._protocol
        if p.error is not None or self._transport.is_closing():
            raise _closed_error(p.error or CommClosedError("comm closed"), self.peer_address)

    def _goes_shared(self, lengths: list[int]) -> bool:
        shared = self.shared
        return shared is not None and not shared.closed and max(lengths) >= shared.threshold

    def _write_small(self, frame: bytes) -> None:
        self._transport.write(encode_header([len(frame)]) + frame)

    def _write(self, frames: Frames, lengths: list[int], in_stream: int) -> None:
        """``lengths`` go in the header (shared frames have their own); ``in_stream``
        bytes follow it on the socket."""
        header = encode_header(lengths)
        if in_stream < SMALL_MESSAGE:
            self._transport.write(b"".join([header, *frames]))
        else:
            self._transport.writelines([header, *frames])

    async def write_frames(self, frames: Frames) -> None:
        p = self._protocol
        self._check_open()
        if _small(frames):
            self._write_small(frames[0])
        else:
            lengths = [frame_nbytes(f) for f in frames]
            in_stream = sum(lengths)
            if self._goes_shared(lengths):
                assert self.shared is not None
                frames, lengths = await self.shared.place(frames, lengths)
                self._check_open()
                in_stream = sum(frame_nbytes(f) for f in frames)
            self._write(frames, lengths, in_stream)
        if p.drain_waiter is not None:
            await self._drain(p.drain_waiter)
        if p.error is not None and not isinstance(p.error, CommClosedError):  # set by _drain
            raise _closed_error(p.error, self.peer_address)

    async def _drain(self, waiter: asyncio.Future[None]) -> None:
        """Wait for the peer to take our bytes; abort if it takes none for a whole stall.

        Slow progress is fine (a big frame on a thin link); no progress at all means a
        peer that stopped reading, and what we would buffer for it has to be bounded.
        """
        pending = self._transport.get_write_buffer_size()
        while True:
            try:
                async with asyncio.timeout(self.write_stall_timeout):
                    await asyncio.shield(waiter)  # other writers may wait on it too
                return
            except TimeoutError:
                now = self._transport.get_write_buffer_size()
                if now < pending:
                    pending = now
                    continue
                error = CommClosedError(f"peer read nothing for {self.write_stall_timeout} s")
                self._protocol._end(error)
                self._transport.abort()
                raise _closed_error(error, self.peer_address) from None

    async def close(self) -> None:
        self._protocol._end(CommClosedError("comm closed"))  # by us: not the peer's doing
        self._close_shared()
        if not self._transport.is_closing():
            self._transport.close()
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self._protocol.closed_future)
        except TimeoutError:
            self._transport.abort()

    def abort(self) -> None:
        self._protocol._end(CommClosedError("comm closed"))
        self._close_shared()
        self._transport.abort()

    def closed(self) -> bool:
        return self._transport.is_closing() or self._protocol.error is not None


def _within_this_host(sock: Any) -> bool:
    """Whether the kernel carries this connection on its loopback device: the peer is a
    loopback address or this socket's own."""
    try:
        peer, local = sock.getpeername()[0], sock.getsockname()[0]
    except OSError:  # already gone
        return False
    if peer == local:
        return True
    address = ipaddress.ip_address(peer)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener's IPv4 peer
    return address.is_loopback


def _small(frames: Frames) -> bool:
    """One small ``bytes`` frame: written with its header in one ``write``."""
    return len(frames) == 1 and type(frames[0]) is bytes and len(frames[0]) < SMALL_MESSAGE


def _closed_error(error: Exception, peer: str) -> Exception:
    if isinstance(error, CommClosedError):
        return CommClosedError(f"{error} (peer {peer})")
    return error


def _sockname_address(scheme: str, sockname: Any) -> str:
    if not sockname:
        return f"{scheme}://<unknown>"
    return format_address(scheme, sockname[0], sockname[1])


def _all_interfaces_socket(port: int) -> socket.socket:
    """One socket for every interface, IPv6 and IPv4 alike, so port 0 means one port."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address: tuple[str, int] = ("::", port)
    except OSError:  # no IPv6 on this machine
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("0.0.0.0", port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def advertised_host(host: str) -> str:
    """A host name peers can use to reach a listener bound to ``host``."""
    if host not in ("", "0.0.0.0", "::"):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class TCPListener(Listener):
    def __init__(self, address: str, on_comm: ComSink, limits: FrameLimits, scheme: str = "tcp"):
        parsed = parse_address(address)
        self._host, self._port = parsed.host, parsed.port
        self._scheme = scheme
        self._on_comm = on_comm
        self._limits = limits
        self._server: asyncio.base_events.Server | None = None
        self.address = ""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        def factory() -> _FrameProtocol:
            return _FrameProtocol(self._limits, self._connected)

        if self._host:
            self._server = await loop.create_server(
                factory, host=self._host, port=self._port, reuse_address=True, backlog=1024
            )
        else:
            sock = _all_interfaces_socket(self._port or 0)
            self._server = await loop.create_server(factory, sock=sock, backlog=1024)
        port = self._server.sockets[0].getsockname()[1]
        self.address = format_address(self._scheme, advertised_host(self._host), port)

    def _connected(self, protocol: _FrameProtocol) -> None:
        self._on_comm(TCPComm(protocol, self._scheme))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


async def resolve_first(host: str, port: int) -> None:
    """Look a host name up before ``create_connection``, so an unknown name fails here.

    Cancelled by a timeout mid-lookup, uvloop's ``create_connection`` leaves the lookup's
    error unretrieved, and asyncio logs it with a traceback: once per attempt, a flood
    from a worker that keeps retrying an unknown host. ``getaddrinfo`` itself does not.
    """
    try:
        ipaddress.ip_address(host)  # an address: nothing to look up
    except ValueError:
        await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


class TCPBackend(Backend):
    async def connect(
        self, address: str, limits: FrameLimits, tls: ssl.SSLContext | None = None
    ) -> Comm:
        parsed = parse_address(address)
        loop = asyncio.get_running_loop()
        port = parsed.network_port()
        await resolve_first(parsed.host, port)
        _, protocol = await loop.create_connection(
            lambda: _FrameProtocol(limits), parsed.host, port
        )
        return TCPComm(protocol)

    def listener(
        self, address: str, on_comm: ComSink, limits: FrameLimits,
        tls: ssl.SSLContext | None = None,
    ) -> Listener:
        return TCPListener(address, on_comm, limits)
