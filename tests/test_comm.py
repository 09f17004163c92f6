"""The transport on its own: addresses, and one conformance suite for tcp and inproc."""

from __future__ import annotations

import asyncio

import pytest

from corral import comm as transport
from corral.comm import FrameLimits, normalize_address, parse_address
from corral.comm.tcp import MAX_QUEUED_MESSAGES
from corral.exceptions import CommClosedError, FrameLimitError


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


async def _joined(address):
    """Two raw comms joined by a listener at ``address``; both aborted afterwards."""
    accepted: asyncio.Queue = asyncio.Queue()
    listener = await transport.listen(address, accepted.put_nowait, limits=FrameLimits())
    client = await transport.connect(listener.address, limits=FrameLimits())
    server = await asyncio.wait_for(accepted.get(), 5)
    yield client, server
    client.abort()
    server.abort()
    await listener.stop()


@pytest.fixture(params=["tcp://127.0.0.1:0", "inproc://"], ids=["tcp", "inproc"])
async def pair(request):
    """Two raw comms joined by a listener of each transport."""
    async for ends in _joined(request.param):
        yield ends


@pytest.fixture
async def tcp_pair():
    async for ends in _joined("tcp://127.0.0.1:0"):
        yield ends


async def test_frames_cross_both_ways(pair):
    client, server = pair
    await client.write_frames([b"hello", b"", b"x" * 200_000])
    assert await server.read_frames() == [b"hello", b"", b"x" * 200_000]
    await server.write_frames([bytearray(b"back")])
    assert await client.read_frames() == [b"back"]


async def test_addresses_of_both_ends(pair):
    client, server = pair
    assert client.peer_address.split("://")[0] == client.local_address.split("://")[0]
    assert server.peer_address == client.local_address or server.peer_address.startswith("tcp")


async def test_close_is_seen_by_the_peer_after_pending_messages(pair):
    client, server = pair
    await client.write_frames([b"last words"])
    await client.close()
    assert client.closed()
    assert await server.read_frames() == [b"last words"]
    with pytest.raises(CommClosedError):
        await server.read_frames()
    with pytest.raises(CommClosedError):
        await client.write_frames([b"after close"])


async def test_abort_wakes_a_blocked_reader(pair):
    client, server = pair
    reader = asyncio.ensure_future(server.read_frames())
    await asyncio.sleep(0)
    client.abort()
    with pytest.raises(CommClosedError):
        await asyncio.wait_for(reader, 5)


async def test_message_over_the_receivers_limits_closes_the_comm(pair):
    client, server = pair
    server.limits = FrameLimits(max_frames=2, max_frame_bytes=100, max_message_bytes=100)
    try:
        await client.write_frames([b"y" * 1000])
    except CommClosedError:
        pass  # inproc refuses at once; over TCP the sender learns on its next call
    with pytest.raises(FrameLimitError, match="exceeds the limit"):
        await server.read_frames()
    assert server.closed()


async def test_a_slow_reader_pushes_back_instead_of_buffering_without_bound(tcp_pair):
    client, server = tcp_pair
    payload = b"p" * 1_000_000
    sent = 0

    async def writer():
        nonlocal sent
        while True:
            await client.write_frames([payload])
            sent += 1

    task = asyncio.ensure_future(writer())
    await asyncio.sleep(0.3)  # time is under test: how far can a writer get unread?
    # The receiver stops reading once its queue is full and the sender blocks in drain:
    # far fewer than the ~1000s of messages the writer could otherwise have pushed.
    assert sent <= MAX_QUEUED_MESSAGES + 16, sent
    for _ in range(sent):
        assert await server.read_frames() == [payload]
    task.cancel()


def test_works_on_uvloop_too():
    uvloop = pytest.importorskip("uvloop")

    async def main():
        accepted: asyncio.Queue = asyncio.Queue()
        listener = await transport.listen("tcp://127.0.0.1:0", accepted.put_nowait, FrameLimits())
        client = await transport.connect(listener.address, limits=FrameLimits())
        server = await accepted.get()
        big = bytes(5_000_000)
        await client.write_frames([b"a", big])
        frames = await server.read_frames()
        client.abort()
        server.abort()
        await listener.stop()
        return frames

    frames = uvloop.run(main())
    assert frames[0] == b"a"
    assert frames[1] == bytes(5_000_000)


async def test_listening_twice_on_one_inproc_address_fails():
    listener = await transport.listen("inproc://taken", lambda comm: None)
    with pytest.raises(OSError, match="already in use"):
        await transport.listen("inproc://taken", lambda comm: None)
    await listener.stop()


async def test_a_peer_that_stops_reading_is_dropped_after_the_write_stall_timeout(tcp_pair):
    client, _ = tcp_pair
    client.write_stall_timeout = 0.3

    async def flood():  # the server never reads: the kernel buffers fill, then we stall
        for _ in range(1000):
            await client.write_frames([b"s" * 1_000_000])

    with pytest.raises(CommClosedError, match=r"read nothing for 0\.3 s"):
        await asyncio.wait_for(flood(), 10)
    assert client.closed()
    with pytest.raises(CommClosedError):
        await client.write_frames([b"after"])


async def test_tcp_comms_probe_silent_peers_with_keepalive(tcp_pair):
    import socket

    from corral.comm.tcp import KEEPALIVE

    for comm in tcp_pair:
        sock = comm._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        for option, value in KEEPALIVE.items():
            if hasattr(socket, option):
                assert sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, option)) == value
