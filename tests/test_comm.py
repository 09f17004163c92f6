"""The transport on its own: addresses, and one conformance suite that every transport
(tcp, tls, inproc) passes.

Each test of the suite runs once per transport; the ones about bytes on a socket
(partial messages, backpressure, stalls, keepalive) run for the stream transports, tcp
and tls, since inproc hands over whole messages and has no socket. TLS certificates
are made by corral's own ``corral.certs`` in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral import comm as transport
from corral import config
from corral.certs import generate
from corral.comm import Comm, FrameLimits, framing, normalize_address, parse_address, tcp
from corral.comm.framing import encode_header
from corral.comm.tcp import KEEPALIVE, MAX_QUEUED_MESSAGES
from corral.comm.tls import PLAINTEXT_REFUSAL
from corral.exceptions import (
    CommClosedError,
    CommError,
    ConnectTimeoutError,
    FrameLimitError,
    ListenError,
    ProtocolError,
    TLSError,
)
from corral.security import Security
from tests._helpers import wait_until


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (8000, "tcp://:8000"),
        (":8000", "tcp://:8000"),
        ("127.0.0.1:8788", "tcp://127.0.0.1:8788"),
        ("tcp://:8888", "tcp://:8888"),
        ("tcp://[::1]:8000", "tcp://[::1]:8000"),
        ("tcp://localhost:0", "tcp://localhost:0"),
        (("127.0.0.1", 80), "tcp://127.0.0.1:80"),
        ("inproc://1234/5", "inproc://1234/5"),
    ],
)
def test_addresses_normalize(given, expected):
    assert normalize_address(given) == expected


@pytest.mark.parametrize(
    "bad", ["127.0.0.1", "tcp://host:port", "udp://x:1", "tcp://::1:80", "h:70000", True, 1.5]
)
def test_bad_addresses_are_rejected_clearly(bad):
    with pytest.raises((ValueError, TypeError)):
        parse_address(bad)


def test_ipv6_host_is_unbracketed_when_parsed():
    assert parse_address("tcp://[::1]:9").host == "::1"


# -- the conformance suite -------------------------------------------------------------------


@dataclass(frozen=True)
class Transport:
    name: str
    listen_at: str
    server_tls: ssl.SSLContext | None = None
    client_tls: ssl.SSLContext | None = None

    @property
    def stream(self) -> bool:
        """Bytes on a socket (tcp, tls), rather than whole messages handed over (inproc)."""
        return self.name != "inproc"

    async def listen(self, on_comm, address: str | None = None) -> transport.Listener:
        return await transport.listen(address or self.listen_at, on_comm, FrameLimits(),
                                      tls=self.server_tls)

    async def connect(self, address: str, timeout: float = 10.0) -> Comm:
        return await transport.connect(address, timeout=timeout, limits=FrameLimits(),
                                       tls=self.client_tls)


def _tls_credentials(directory) -> Security:
    files = generate(directory)["node"]
    return Security(tls_ca_file=str(files.ca_file), tls_cert=str(files.cert),
                    tls_key=str(files.key))


@pytest.fixture(scope="module")
def tls_security(tmp_path_factory) -> Security:
    return _tls_credentials(tmp_path_factory.mktemp("tls"))


def _transport(name: str, security: Security) -> Transport:
    if name == "tls":
        return Transport("tls", "tls://127.0.0.1:0", security.ssl_context(server_side=True),
                         security.ssl_context(server_side=False))
    return Transport(name, {"tcp": "tcp://127.0.0.1:0", "inproc": "inproc://"}[name])


@pytest.fixture(params=["tcp", "tls", "inproc"])
def kind(request, tls_security) -> Transport:
    """Each transport in turn."""
    return _transport(request.param, tls_security)


@pytest.fixture(params=["tcp", "tls"])
def stream_kind(request, tls_security) -> Transport:
    """Each transport that carries bytes on a socket."""
    return _transport(request.param, tls_security)


@dataclass
class Joined:
    client: Comm
    server: Comm
    listener: transport.Listener


@contextlib.asynccontextmanager
async def _joined(kind: Transport) -> AsyncIterator[Joined]:
    """Two raw comms joined by a listener of ``kind``; both aborted afterwards."""
    accepted: asyncio.Queue[Comm] = asyncio.Queue()
    listener = await kind.listen(accepted.put_nowait)
    try:
        client = await kind.connect(listener.address)
        server = await asyncio.wait_for(accepted.get(), 5)
        try:
            yield Joined(client, server, listener)
        finally:
            client.abort()
            server.abort()
    finally:
        await listener.stop()


@pytest.fixture
async def pair(kind) -> AsyncIterator[Joined]:
    async with _joined(kind) as joined:
        yield joined


@pytest.fixture
async def stream_pair(stream_kind) -> AsyncIterator[Joined]:
    async with _joined(stream_kind) as joined:
        yield joined


async def test_frames_cross_both_ways(pair):
    await pair.client.write_frames([b"hello", b"", b"x" * 200_000])
    assert await pair.server.read_frames() == [b"hello", b"", b"x" * 200_000]
    await pair.server.write_frames([bytearray(b"back"), memoryview(b"view")])
    assert await pair.client.read_frames() == [b"back", b"view"]


async def test_a_large_message_of_many_frames_arrives_whole(pair):
    big = bytes(range(256)) * 20_000  # 5 MB: many reads on a socket
    frames = [b"", big, *(bytes([i]) * i for i in range(200)), big[::-1]]
    await pair.client.write_frames(frames)
    assert await pair.server.read_frames() == frames


async def test_pipelined_messages_of_mixed_sizes_keep_their_order(pair):
    sizes = [0, 1, 70_000, 3, 1_000_000, 5, 64 * 1024, 64 * 1024 - 1] * 10
    sent = [[i.to_bytes(4, "little"), b"z" * n] for i, n in enumerate(sizes)]
    writer = asyncio.ensure_future(_write_all(pair.client, sent))
    received = [await pair.server.read_frames() for _ in sent]
    await writer
    assert received == sent


async def _write_all(comm: Comm, messages) -> None:
    for frames in messages:
        await comm.write_frames(frames)


async def test_write_nowait_writes_at_once_or_hands_back_the_rest(pair):
    """A message the transport takes without waiting is written before ``write_nowait``
    returns (None: no task, no loop turn); otherwise it comes back as an awaitable that
    finishes the write. Either way the messages arrive in order."""
    assert pair.client.write_nowait([b"one"]) is None  # small, and the peer keeps up
    rest = pair.client.write_nowait([b"two", b"x" * 200_000])
    if rest is not None:
        await rest
    assert await pair.server.read_frames() == [b"one"]
    assert await pair.server.read_frames() == [b"two", b"x" * 200_000]


async def test_write_nowait_waits_for_a_peer_that_is_behind(stream_pair):
    client = stream_pair.client
    client._protocol.pause_writing()  # what the transport does when its buffer is full
    pending = client.write_nowait([b"later"])
    assert pending is not None  # nothing written yet: the write waits for the peer
    client._protocol.resume_writing()
    await pending
    assert await stream_pair.server.read_frames() == [b"later"]
    client.abort()
    with pytest.raises(CommClosedError):
        client.write_nowait([b"after"])


async def test_a_message_written_in_pieces_arrives_whole(stream_pair):
    """The reader reassembles a message however the stream splits it."""
    frames = [b"head", b"b" * 100_000, b"tail"]
    data = encode_header([len(f) for f in frames]) + b"".join(frames)
    raw = stream_pair.client._transport
    for cut in range(0, len(data), 7_919):  # pieces that split the header and the frames
        raw.write(data[cut:cut + 7_919])
        await asyncio.sleep(0)  # a loop turn between pieces, so they travel apart
    assert await stream_pair.server.read_frames() == frames


async def test_addresses_of_both_ends(kind, pair):
    client, server = pair.client, pair.server
    assert client.peer_address == pair.listener.address
    assert server.peer_address == client.local_address
    assert server.local_address == client.peer_address
    for address in (client.local_address, client.peer_address, server.peer_address):
        assert parse_address(address).scheme == kind.name
    ends = f"{client.local_address} -> {client.peer_address}"
    assert repr(client) == f"<{type(client).__name__} {ends} open>"


async def test_close_is_seen_by_the_peer_after_pending_messages(pair):
    client, server = pair.client, pair.server
    await client.write_frames([b"last words"])
    await client.close()
    assert client.closed()
    assert "closed" in repr(client)
    await client.close()  # twice is fine
    assert await server.read_frames() == [b"last words"]
    with pytest.raises(CommClosedError):
        await server.read_frames()
    with pytest.raises(CommClosedError):
        await client.write_frames([b"after close"])
    with pytest.raises(CommClosedError):
        await client.read_frames()


async def test_abort_wakes_a_blocked_reader(pair):
    reader = asyncio.ensure_future(pair.server.read_frames())
    await asyncio.sleep(0)  # let it block
    assert not reader.done()
    pair.client.abort()
    with pytest.raises(CommClosedError):
        await asyncio.wait_for(reader, 5)


async def test_writing_to_a_vanished_peer_fails_with_comm_closed(pair):
    # (A TLS server that hangs up before its first word is taken for a certificate
    # refusal, a TLSError: tested in test_security; here the peer vanishes mid-talk.)
    await pair.server.write_frames([b"hello"])
    assert await pair.client.read_frames() == [b"hello"]
    pair.server.abort()
    await wait_until(pair.client.closed, what="the client sees its peer gone")
    with pytest.raises(CommClosedError, match="peer"):
        await pair.client.write_frames([b"anyone there?"])
    with pytest.raises(CommClosedError):
        await pair.client.read_frames()


async def test_a_peer_dying_mid_message_is_a_closed_comm_not_half_a_message(stream_pair):
    client, server = stream_pair.client, stream_pair.server
    data = encode_header([1000]) + b"h" * 500  # half of the one frame
    client._transport.write(data)
    await wait_until(lambda: server._protocol._received, what="the first half arrived")
    client.abort()
    with pytest.raises(CommClosedError):
        await asyncio.wait_for(server.read_frames(), 5)


async def test_message_over_the_receivers_limits_closes_the_comm(pair):
    pair.server.limits = FrameLimits(max_frames=2, max_frame_bytes=100, max_message_bytes=100)
    try:
        await pair.client.write_frames([b"y" * 1000])
    except CommClosedError:
        pass  # inproc refuses at once; over a socket the sender learns on a later call
    with pytest.raises(FrameLimitError, match="exceeds the limit"):
        await pair.server.read_frames()
    assert pair.server.closed()


async def test_no_memory_for_a_large_frame_closes_that_comm_in_one_line(
        stream_pair, monkeypatch, caplog):
    def no_memory(length):
        raise MemoryError(f"cannot allocate {length} bytes")

    monkeypatch.setattr(framing, "allocate_frame", no_memory)
    with contextlib.suppress(CommClosedError):
        await stream_pair.client.write_frames([b"y" * (8 * 2**20)])
    with pytest.raises(CommClosedError, match="no memory for an incoming message: "
                                              "MemoryError: cannot allocate 8388608 bytes"):
        await stream_pair.server.read_frames()
    assert stream_pair.server.closed()
    (record,) = [r for r in caplog.records if "no memory" in r.getMessage()]
    assert record.exc_info is None


def _socket_buffers_max() -> int:
    """The most one loopback connection's two socket buffers can grow to hold."""
    try:
        return sum(int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
                   for name in ("tcp_rmem", "tcp_wmem"))
    except OSError:  # not Linux: assume its usual maxima
        return 10 * 2**20


async def test_a_slow_reader_pushes_back_instead_of_buffering_without_bound(stream_pair):
    client, server = stream_pair.client, stream_pair.server
    payload = b"p" * 1_000_000
    sent = 0

    async def writer():
        nonlocal sent
        while True:
            await client.write_frames([payload])
            sent += 1

    task = asyncio.ensure_future(writer())
    # The receiver stops reading once its queue is full, the kernel's buffers fill, and
    # the writer blocks waiting for them to drain.
    await wait_until(lambda: server._protocol.paused_reading, what="the reader paused")
    await wait_until(lambda: client._protocol.drain_waiter is not None,
                     what="the writer blocked")
    blocked_at = sent
    # Far fewer than the writer could otherwise have pushed: the queue plus what the
    # kernel's socket buffers hold (Linux grows them up to tcp_rmem/tcp_wmem's maximum).
    assert blocked_at <= MAX_QUEUED_MESSAGES + _socket_buffers_max() // len(payload) + 2, sent
    for _ in range(blocked_at + 5):  # reading lets the writer go on
        assert await server.read_frames() == [payload]
    await wait_until(lambda: sent > blocked_at, what="the writer went on")
    task.cancel()


async def test_a_peer_that_stops_reading_is_dropped_after_the_write_stall_timeout(stream_pair):
    client = stream_pair.client
    client.write_stall_timeout = 0.3

    async def flood():  # the server never reads: the kernel buffers fill, then we stall
        for _ in range(1000):
            await client.write_frames([b"s" * 1_000_000])

    with pytest.raises(CommClosedError, match=r"read nothing for 0\.3 s"):
        await asyncio.wait_for(flood(), 10)
    assert client.closed()
    with pytest.raises(CommClosedError):
        await client.write_frames([b"after"])


async def test_stream_comms_probe_silent_peers_with_keepalive(stream_pair):
    for comm in (stream_pair.client, stream_pair.server):
        sock = comm._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        for option, value in KEEPALIVE.items():
            if hasattr(socket, option):
                assert sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, option)) == value


def _send_buffers(joined: Joined) -> list[int]:
    return [comm._transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET,
                                                                 socket.SO_SNDBUF)
            for comm in (joined.client, joined.server)]


@pytest.mark.skipif(sys.platform != "linux", reason="Linux doubles a send buffer it is given")
async def test_stream_comms_within_this_host_send_through_a_small_buffer(stream_kind):
    with config.set({"comm.local-send-buffer": "256KiB"}):
        async with _joined(stream_kind) as joined:
            assert _send_buffers(joined) == [2 * 256 * 1024] * 2
    with config.set({"comm.local-send-buffer": 0}):  # the kernel's own, grown on demand
        async with _joined(stream_kind) as joined:
            assert 2 * 256 * 1024 not in _send_buffers(joined)


class _Socket:
    def __init__(self, peer: str, local: str) -> None:
        self.peer, self.local = peer, local

    def getpeername(self) -> tuple[str, int]:
        if not self.peer:
            raise OSError(107, "Transport endpoint is not connected")
        return self.peer, 1

    def getsockname(self) -> tuple[str, int]:
        return self.local, 2


@pytest.mark.parametrize(("peer", "local", "within"), [
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.5", "127.0.0.1", True),
    ("::1", "::1", True),
    ("::ffff:127.0.0.1", "::ffff:127.0.0.1", True),  # a dual-stack listener's IPv4 peer
    ("192.0.2.7", "192.0.2.7", True),  # this host's own address: the kernel loops it
    ("::ffff:192.0.2.7", "::ffff:192.0.2.7", True),
    ("192.0.2.8", "192.0.2.7", False),
    ("::ffff:192.0.2.8", "::ffff:192.0.2.7", False),
    ("fd00::3", "fd00::2", False),
    ("", "127.0.0.1", False),  # gone before it was set up
    ("fe80::1%eth0", "fe80::2%eth0", False),
])
def test_a_connection_is_within_this_host_when_the_kernel_loops_it(peer, local, within):
    assert tcp._within_this_host(_Socket(peer, local)) is within


async def test_connecting_to_nobody_times_out_naming_the_address_and_cause(kind):
    listener = await kind.listen(lambda comm: None)
    address = listener.address
    await listener.stop()  # nobody listens there any more
    with pytest.raises(ConnectTimeoutError, match=f"connect to {address}") as info:
        await kind.connect(address, timeout=0.3)
    assert isinstance(info.value, CommError)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert "ConnectionRefusedError" in str(info.value)


async def test_listening_on_a_taken_address_raises_listen_error(kind):
    listener = await kind.listen(lambda comm: None)
    try:
        with pytest.raises(ListenError, match=f"(?i)cannot listen at {listener.address}: "
                                              ".*in use") as info:
            await kind.listen(lambda comm: None, address=listener.address)
        if kind.stream:  # the OS said so: its error stays chained
            assert isinstance(info.value.__cause__, OSError)
            assert not isinstance(info.value.__cause__, CommError)
    finally:
        await listener.stop()


async def test_tcp_refuses_a_peer_that_speaks_tls(tls_security):
    tcp, tls = _transport("tcp", tls_security), _transport("tls", tls_security)
    accepted: asyncio.Queue[Comm] = asyncio.Queue()
    listener = await tcp.listen(accepted.put_nowait)
    try:
        with pytest.raises(TLSError, match=r"does not speak TLS|plaintext"):
            await tls.connect(listener.address.replace("tcp://", "tls://"), timeout=5)
        server = await asyncio.wait_for(accepted.get(), 5)
        with pytest.raises(ProtocolError, match="TLS handshake on a plaintext"):
            await asyncio.wait_for(server.read_frames(), 5)
        assert server.closed()
    finally:
        await listener.stop()


async def test_tls_marks_a_plaintext_peer_refused_so_it_can_be_told(tls_security):
    tcp, tls = _transport("tcp", tls_security), _transport("tls", tls_security)
    accepted: asyncio.Queue[Comm] = asyncio.Queue()
    listener = await tls.listen(accepted.put_nowait)
    try:
        client = await tcp.connect(listener.address.replace("tls://", "tcp://"))
        await client.write_frames([b"plaintext hello"])
        server = await asyncio.wait_for(accepted.get(), 5)
        assert server.refused == PLAINTEXT_REFUSAL
        await server.write_frames([server.refused.encode()])  # the words reach the peer
        assert await client.read_frames() == [PLAINTEXT_REFUSAL.encode()]
        client.abort()
        server.abort()
    finally:
        await listener.stop()


async def test_tls_refuses_a_peer_whose_certificate_another_ca_signed(tls_security, tmp_path):
    tls = _transport("tls", tls_security)
    intruder = _transport("tls", _tls_credentials(tmp_path))
    accepted: asyncio.Queue[Comm] = asyncio.Queue()
    listener = await tls.listen(accepted.put_nowait)
    try:
        with pytest.raises(TLSError, match="failed our checks"):
            await intruder.connect(listener.address, timeout=5)
        assert accepted.empty()  # no comm reached the server
    finally:
        await listener.stop()


async def test_tls_needs_credentials_at_both_ends(tls_security):
    with pytest.raises(TLSError, match="give TLS credentials"):
        await transport.connect("tls://127.0.0.1:1", timeout=1)
    with pytest.raises(TLSError, match="needs a certificate"):
        await transport.listen("tls://127.0.0.1:0", lambda comm: None)


@pytest.mark.parametrize("name", ["tcp", "tls", "inproc"])
def test_works_on_uvloop_too(name, tls_security):
    uvloop = pytest.importorskip("uvloop")
    kind = _transport(name, tls_security)

    async def main():
        async with _joined(kind) as joined:
            await joined.client.write_frames([b"a", bytes(5_000_000)])
            frames = await joined.server.read_frames()
            await joined.client.close()
            with pytest.raises(CommClosedError):
                await joined.server.read_frames()
        return frames

    frames = uvloop.run(main())
    assert frames == [b"a", bytes(5_000_000)]
