"""Same-host shared memory for large frames: memfds passed beside a TCP/TLS comm (Linux).

Theory of operation:

* A comm between two processes on one host may get a *side channel*: a Unix
  ``SOCK_SEQPACKET`` connection. For each large frame (``comm.shared-memory.threshold``
  and up) the writer copies the bytes once into a memfd (fresh, or one a peer released
  since: ``segments.SegmentCache``) and sends the side channel one record,
  ``<u64 sequence><u64 nbytes>``, with the memfd attached (``SCM_RIGHTS``).
  In the stream's header that frame's length carries ``SHARED_FLAG``; none of its bytes
  follow in the stream. The reader takes the records in order, checks sequence and size,
  and maps each memfd private and writable (copy-on-write): the frame *is* that
  mapping. No copy goes through the kernel's socket buffers, and the receiver never
  copies at all. A frame its owner sealed in a segment already (``segments.seal``) is
  not copied by the writer either: that segment is sent as it is.
* Releases: the reader tells the writer (a record with ``_RELEASE`` set) when it no
  longer maps a frame. A segment copied into goes back to the writer's cache then; a
  sealed one counts one lend less, and goes back to the cache once its owner's object is
  gone too (``segments.sealed_returned``). Lends outstanding when the channel ends will
  never be released: those segments are never reused.
* Lifetimes: a memfd has no name (nothing in ``/dev/shm``). The writer closes its fd
  right after sending it; the receiver closes its own once mapped; the pages go back to
  the kernel when the last mapping goes, i.e. when the object built on the frame is
  garbage collected. Records sent but never taken die with the side channel, which
  closes with its comm or with either process, crashes included.
* Authentication: the server's handshake, once the peer has proved itself, hands it the
  abstract name of the server's ``SharedListener`` and a one-time ticket; the channel
  counts only after that ticket came back on it, and the listener answers ``ACK``. Only
  then does either side send frames this way: nothing is ever sent on a channel that has
  not presented a live ticket. A peer that never authenticated never learns a ticket.
* Fallback, frame by frame: no channel (other host, another network namespace, an inproc
  comm, turned off in config), or the memfd cannot be made or sent (memory short, too
  many descriptors in flight): the frame goes through the socket as before.

The protocol layer never sees any of this: frames come out of ``read_frames`` as
buffers, from the stream or from shared memory alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import struct
import sys
import weakref
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from corral import config, utils
from corral.comm import segments
from corral.comm.framing import SHARED_FLAG
from corral.comm.segments import stats
from corral.exceptions import CommClosedError, ProtocolError

_RECORD = struct.Struct("<QQ")  # sequence number, size; one memfd attached
_RELEASE = 1 << 63  # a record's sequence with this bit: the peer let go of that segment
TICKET_BYTES = 32
ACK = b"corral-shared-memory-ok"
TICKET_TIMEOUT = 10.0  # a side channel that presents no ticket in this long is dropped
MAX_PENDING = 64  # side channels connected but not yet presenting a ticket
OFFLOAD_BYTES = 8 * 2**20  # copies at least this large run on the loop's executor

def available() -> bool:
    """Whether this platform can do it at all (Linux: memfds and Unix seqpackets)."""
    return (sys.platform == "linux" and hasattr(os, "memfd_create")
            and hasattr(socket, "SOCK_SEQPACKET") and hasattr(socket, "send_fds"))


def enabled() -> bool:
    """``comm.shared-memory.enabled`` and ``available()``."""
    return bool(config.get("comm.shared-memory.enabled")) and available()


def threshold() -> int:
    return max(1, utils.parse_bytes(config.get("comm.shared-memory.threshold")))


def _read_host_id() -> str:
    """This kernel's boot id: two processes share memory only under one kernel."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


HOST_ID = _read_host_id()


def same_host(peer_host_id: object) -> bool:
    return bool(HOST_ID) and peer_host_id == HOST_ID


_cache: segments.SegmentCache | None = None
_open_channels: weakref.WeakSet[SharedChannel] = weakref.WeakSet()


def cache() -> segments.SegmentCache:
    """This process's cache of released segments (``comm.shared-memory.cache``)."""
    global _cache
    if _cache is None:
        _cache = segments.SegmentCache(utils.parse_bytes(config.get("comm.shared-memory.cache")))
    return _cache


def cached_bytes() -> tuple[int, int]:
    """Bytes of the segments kept for reuse (memory this process holds), and of those of
    them with a window open (``segments.Segment.copy_in``), which are in its RSS."""
    return (_cache.nbytes, _cache.mapped) if _cache is not None else (0, 0)


def trim_cache(clear: bool = False) -> None:
    """Free the cached segments unused for ``segments.IDLE_SECONDS``, or all of them."""
    if _cache is not None:
        _cache.clear() if clear else _cache.trim()


def _fill_all(jobs: list[tuple[segments.Segment, Any]]) -> None:
    for segment, frame in jobs:
        segment.fill(frame)


# -- the side channel ------------------------------------------------------------------


class SharedChannel:
    """One side channel: sends and receives memfd records, in order (module docstring)."""

    def __init__(self, sock: socket.socket, limit: int | None = None) -> None:
        self.threshold = threshold() if limit is None else limit
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._records: deque[tuple[int, int, int]] = deque()  # sequence, nbytes, fd
        self._waiter: asyncio.Future[None] | None = None
        self._sent = 0  # sequence number of the next record sent
        self._taken = 0  # sequence number of the next record expected
        self.closed = False  # by us: nothing more is sent or taken
        self._ended = False  # by the peer: what it sent before can still be taken
        self._lent: dict[int, segments.Segment] = {}  # sent, not yet released by the peer
        self._lent_sealed: dict[int, segments.Segment] = {}  # the same, of sealed segments
        self._trimming: asyncio.TimerHandle | None = None
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)
        stats["channels"] += 1
        _open_channels.add(self)

    async def place(self, frames: list[Any], lengths: list[int]) -> tuple[list[Any], list[int]]:
        """Move the large frames into shared memory: the frames left for the stream, and
        every frame's length (``SHARED_FLAG`` set for those that moved). A frame that is
        a sealed buffer lends its segment as it is; others are copied into one first."""
        jobs: list[tuple[int, segments.Segment]] = []
        sealed: list[tuple[int, segments.Segment]] = []
        for i, n in enumerate(lengths):
            if n >= self.threshold:
                segment = segments.sealed_segment(frames[i])
                if segment is not None:
                    sealed.append((i, segment))
                    continue
                try:
                    jobs.append((i, cache().take(n)))
                except OSError:  # memory short: this one takes the socket
                    stats["fallback_frames"] += 1
        if not jobs and not sealed:
            return frames, lengths
        fills = [(segment, frames[i]) for i, segment in jobs]
        if sum(lengths[i] for i, _ in jobs) < OFFLOAD_BYTES:
            _fill_all(fills)
        else:
            future = self._loop.run_in_executor(None, _fill_all, fills)
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                def give_back(_: object) -> None:
                    for s, _f in fills:
                        cache().put(s)

                future.add_done_callback(give_back)
                raise
        lengths = list(lengths)
        moved: set[int] = set()
        # Records go in frame order: the reader takes them in the order of the header.
        sends = sorted([(i, s, True) for i, s in jobs] + [(i, s, False) for i, s in sealed],
                       key=lambda send: send[0])
        for i, segment, lent in sends:
            if self._send(segment, lengths[i], lent):
                moved.add(i)
                stats["sent_frames"] += 1
                stats["sent_bytes"] += lengths[i]
                stats["sealed_frames_sent"] += not lent
                lengths[i] |= SHARED_FLAG
            else:
                if lent:
                    cache().put(segment)
                stats["fallback_frames"] += 1
        return [f for i, f in enumerate(frames) if i not in moved], lengths

    def _send(self, segment: segments.Segment, nbytes: int, lent: bool = True) -> bool:
        """Send ``segment``'s fd; a ``lent`` one comes back to the cache when released, a
        sealed one (not ``lent``) counts one lend more until then."""
        if self.closed or self._ended:
            return False
        if not lent:  # counted before the peer can have it, and so before it releases it
            segments.lend_sealed(segment)
        try:
            socket.send_fds(self._sock, [_RECORD.pack(self._sent, nbytes)], [segment.fd])
        except OSError as e:
            if not lent:  # not sent after all (its owner's object holds it meanwhile)
                segments.sealed_returned(segment)
            if not isinstance(e, BlockingIOError):  # (blocking: the peer is behind)
                self.close()
            return False  # this frame takes the socket
        (self._lent if lent else self._lent_sealed)[self._sent] = segment
        self._sent += 1
        return True

    def _on_release(self, sequence: int) -> None:
        sealed = self._lent_sealed.pop(sequence, None)
        if sealed is not None:
            segments.sealed_returned(sealed)
        segment = self._lent.pop(sequence, None)
        if segment is not None:
            cache().put(segment)
            if self._trimming is None:
                self._trimming = self._loop.call_later(segments.IDLE_SECONDS, self._trim)

    def _trim(self) -> None:
        self._trimming = None
        cache().trim()

    def _release_soon(self, sequence: int) -> None:
        """Tell the sender that segment ``sequence`` is unmapped here (any thread)."""
        if not (self.closed or self._ended):
            with contextlib.suppress(RuntimeError):  # the loop is closed: so is the peer
                self._loop.call_soon_threadsafe(self._release, sequence)

    def _release(self, sequence: int) -> None:
        if not (self.closed or self._ended):
            with contextlib.suppress(OSError):  # not told: it frees the segment at close
                self._sock.send(_RECORD.pack(sequence | _RELEASE, 0))

    async def take(self, nbytes: int) -> Any:
        """The next shared frame, mapped; ``CommClosedError`` if the channel is gone."""
        while not self._records:
            if self.closed or self._ended:
                raise CommClosedError("shared memory channel closed")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        sequence, size, fd = self._records.popleft()
        try:
            if sequence != self._taken or size != nbytes:
                raise ProtocolError(f"shared frame {sequence} of {size} bytes where frame "
                                    f"{self._taken} of {nbytes} bytes was expected")
            self._taken += 1
            frame = segments.map_frame(fd, nbytes, partial(self._release_soon, sequence))
        finally:
            os.close(fd)
        stats["received_frames"] += 1
        stats["received_bytes"] += nbytes
        return frame

    def _on_readable(self) -> None:
        while not self.closed:
            try:
                data, fds, flags, _ = socket.recv_fds(self._sock, _RECORD.size, 1)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            if not data and not fds:  # the peer hung up: keep what it sent
                self._end()
                return
            if len(data) == _RECORD.size and not fds:
                sequence, _ = _RECORD.unpack(data)
                if sequence & _RELEASE:
                    self._on_release(sequence & ~_RELEASE)
                    continue
            if len(data) != _RECORD.size or len(fds) != 1 or flags & (socket.MSG_TRUNC
                                                                       | socket.MSG_CTRUNC):
                for fd in fds:
                    os.close(fd)
                self.close()  # not a record: nothing on this channel can be trusted
                return
            sequence, nbytes = _RECORD.unpack(data)
            self._records.append((sequence, nbytes, fds[0]))
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._strand()
        self._wake()

    def _strand(self) -> None:
        """No release can come any more: the sealed segments the peer was lent and did
        not release may be mapped there still, and are never reused."""
        while self._lent_sealed:
            segments.sealed_returned(self._lent_sealed.popitem()[1], stranded=True)

    def close(self) -> None:
        """Stop: the side channel closes, frames sent to us and not taken are dropped."""
        self.closed = True
        self._end()
        while self._records:
            os.close(self._records.popleft()[2])
        for segment in self._lent.values():  # the peer may map them still: never reuse
            segment.close()
        self._lent.clear()
        if self._trimming is not None:
            self._trimming.cancel()
            self._trimming = None
        _open_channels.discard(self)
        if not _open_channels:  # nobody left to lend segments to: give them all back
            cache().clear()

    def __del__(self) -> None:
        while getattr(self, "_records", None):
            os.close(self._records.popleft()[2])
        if getattr(self, "_lent_sealed", None):
            self._strand()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _recv_when_readable(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sock.fileno(), _set_once, readable)
            try:
                await readable
            finally:
                loop.remove_reader(sock.fileno())


async def open_channel(name: str, ticket: bytes, timeout: float) -> SharedChannel | None:
    """The client's side: connect to a listener, present ``ticket``, wait for ``ACK``.

    None if that fails (another network namespace, a listener gone): no shared memory.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        sock.connect(name)
        sock.send(ticket)
        async with asyncio.timeout(timeout):
            answer = await _recv_when_readable(sock, len(ACK))
        if answer != ACK:
            raise ConnectionRefusedError("shared memory channel refused")
        return SharedChannel(sock)
    except (OSError, TimeoutError):
        sock.close()
        return None


class SharedListener:
    """The server's side: accepts side channels and attaches each to the comm whose
    ticket it presents (module docstring)."""

    def __init__(self) -> None:
        self.name = ""
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # ticket -> the comm's attach method, weakly: a comm gone makes its ticket void
        self._tickets: dict[bytes, weakref.WeakMethod[Callable[[SharedChannel], bool]]] = {}
        self._pending: dict[socket.socket, asyncio.TimerHandle] = {}

    def start(self) -> None:
        """Listen at a fresh abstract name (no file: nothing to clean up after a crash)."""
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        name = f"\0corral-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            sock.bind(name)
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock, self.name = sock, name
        self._loop.add_reader(sock.fileno(), self._accept)

    def offer(self, attach: Callable[[SharedChannel], bool]) -> bytes:
        """A one-time ticket that attaches the channel presenting it with ``attach``."""
        if len(self._tickets) >= 256:  # drop the tickets of comms that are gone
            self._tickets = {t: m for t, m in self._tickets.items() if m() is not None}
        ticket = secrets.token_bytes(TICKET_BYTES)
        self._tickets[ticket] = weakref.WeakMethod(attach)
        return ticket

    def withdraw(self, ticket: bytes) -> None:
        self._tickets.pop(ticket, None)

    def _accept(self) -> None:
        assert self._sock is not None
        assert self._loop is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            except OSError:  # out of descriptors, ...: the peer falls back to the socket
                return
            conn.setblocking(False)
            if len(self._pending) >= MAX_PENDING:
                oldest = next(iter(self._pending))
                self._drop(oldest)
            self._pending[conn] = self._loop.call_later(TICKET_TIMEOUT, self._drop, conn)
            self._loop.add_reader(conn.fileno(), self._on_ticket, conn)

    def _drop(self, conn: socket.socket) -> None:
        timer = self._pending.pop(conn, None)
        if timer is not None:
            timer.cancel()
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(conn.fileno())
        conn.close()

    def _on_ticket(self, conn: socket.socket) -> None:
        try:
            ticket = conn.recv(TICKET_BYTES + 1)
        except BlockingIOError:
            return
        except OSError:
            ticket = b""
        method = self._tickets.pop(ticket, None)
        attach = method() if method is not None else None
        timer = self._pending.pop(conn, None)
        if timer is not None:
            timer.cancel()
        assert self._loop is not None
        self._loop.remove_reader(conn.fileno())
        if attach is None:
            conn.close()  # no such ticket: this peer gets nothing
            return
        channel = SharedChannel(conn)
        if not attach(channel):
            channel.close()
            return
        try:
            conn.send(ACK)
        except OSError:
            channel.close()

    def stop(self) -> None:
        for conn in list(self._pending):
            self._drop(conn)
        self._tickets.clear()
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
