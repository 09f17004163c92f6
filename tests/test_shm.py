"""Same-host shared memory for large frames (corral.comm.shm): through it, around it.

In-process servers over loopback TCP (both ends in this process count in one ``stats``;
the in-process shortcut, which needs no shared memory, is off here), then a real cluster
of worker processes, and a worker killed while it holds mapped data.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import socket
import struct
import weakref

import numpy as np
import pytest

import corral
from corral import Client, LocalCluster, Security
from corral.comm import FrameLimits, FrameReader, segments, shm
from corral.comm.framing import SHARED_FLAG, SharedFrame, SharedFrames
from corral.core import Server, connect, rpc
from corral.exceptions import AuthenticationError, FrameLimitError
from tests._helpers import wait_until, wait_until_blocking

pytestmark = pytest.mark.skipif(not shm.available(), reason="shared memory needs Linux memfds")

LARGE = 2 * 2**20  # over the default 1 MiB threshold
SMALL = 100_000


def echo(comm, data=None):
    return data


@pytest.fixture(autouse=True)
def over_sockets():
    with corral.config.set({"comm.inproc-shortcut": False}):
        yield


@pytest.fixture
async def sharing_server():
    async with Server({"echo": echo}, shared_memory=True) as server:
        await server.listen("tcp://127.0.0.1:0")
        yield server


def counts() -> dict[str, int]:
    return dict(shm.stats)


def grown(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in shm.stats.items() if v != before[k]}


def memfds() -> tuple[list[str], list[str]]:
    """This process's descriptors of corral's memfds, and its mappings of them."""
    fds = [link for fd in os.listdir("/proc/self/fd")
           if "corral-frame" in (link := _readlink(f"/proc/self/fd/{fd}"))]
    with open("/proc/self/maps") as maps:
        return fds, [line for line in maps if "corral-frame" in line]


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


# -- the wire --------------------------------------------------------------------------


def test_a_reader_takes_shared_frames_only_when_its_comm_has_a_side_channel():
    header = struct.pack("<IQQ", 2, 3, LARGE | SHARED_FLAG)
    with pytest.raises(FrameLimitError):
        _feed(FrameReader(FrameLimits()), header)
    reader = FrameReader(FrameLimits())
    reader.shared = True
    [message] = _feed(reader, header + b"abc")
    assert type(message) is SharedFrames
    assert message[0] == b"abc"
    assert type(message[1]) is SharedFrame
    assert message[1].nbytes == LARGE
    reader = FrameReader(FrameLimits(max_message_bytes=LARGE))
    reader.shared = True
    with pytest.raises(FrameLimitError):  # a shared frame counts against the limits too
        _feed(reader, header + b"abc")


def _fill(reader: FrameReader, data: bytes) -> int:
    buffer = reader.get_buffer()
    buffer[: len(data)] = data
    return len(data)


def _feed(reader: FrameReader, data: bytes) -> list:
    return reader.buffer_updated(_fill(reader, data))


# -- through shared memory -------------------------------------------------------------


async def test_large_values_travel_in_shared_memory_equal_and_writable(sharing_server):
    before = counts()
    array = np.arange(LARGE // 8, dtype="f8")
    async with rpc(sharing_server.address) as r:
        back = await r.echo(data=array)
        blob = await r.echo(data=b"x" * LARGE)
    assert np.array_equal(back, array)
    assert back.flags.writeable
    back[0] = 42.0  # the receiver's own memory: the sender's array is untouched
    assert array[0] == 0.0
    assert blob == b"x" * LARGE
    assert {k: v for k, v in grown(before).items() if k != "reused_segments"} == {
        "channels": 2, "sent_frames": 4, "received_frames": 4,
        "sent_bytes": 4 * LARGE, "received_bytes": 4 * LARGE}


def test_a_sender_never_maps_a_segment(monkeypatch):
    """What a peer keeps counts in the peer's memory, not in the sender's RSS (which a
    worker's memory manager and its nanny watch), not even while it is copied in: a
    paused worker serving a chunk was restarted for the moment its mapping lasted."""
    segment = segments.Segment(segments.capacity(LARGE))
    try:
        def no_mapping(*args, **kwargs):
            raise AssertionError("the sender mapped a segment")

        monkeypatch.setattr(segments.mmap, "mmap", no_mapping)
        segment.fill(b"y" * LARGE)
        monkeypatch.undo()
        inode = str(os.fstat(segment.fd).st_ino)
        assert not [m for m in memfds()[1] if m.split()[4] == inode]
        with open(f"/proc/self/fd/{segment.fd}", "rb") as copy:  # the bytes are there
            assert copy.read(LARGE) == b"y" * LARGE
    finally:
        segment.close()


async def test_small_values_stay_in_the_stream(sharing_server):
    async with rpc(sharing_server.address) as r:
        await r.echo(data=b"warm")
        before = counts()
        assert np.array_equal(await r.echo(data=np.ones(SMALL, "u1")), np.ones(SMALL, "u1"))
    assert grown(before) == {}


async def test_a_mapped_frame_lives_as_long_as_its_value_then_goes_back_to_its_sender(
        sharing_server):
    shm.cache().clear()
    gc.collect()
    assert memfds() == ([], [])
    assert segments._mapped == 0
    async with rpc(sharing_server.address) as r:
        back = await r.echo(data=np.ones(LARGE, "u1"))
        # The server lets go of the request it echoed when the next message comes.
        assert await r.echo(data=b"next") == b"next"
        await wait_until(lambda: [gc.collect(), segments._mapped == 1][1])
        await wait_until(lambda: shm.cache().nbytes == segments.capacity(LARGE))  # request's
        assert back.sum() == LARGE
        del back
        gc.collect()
        await wait_until(lambda: segments._mapped == 0)
        await wait_until(lambda: shm.cache().nbytes == 2 * segments.capacity(LARGE))
        before = counts()
        assert await r.echo(data=b"u" * LARGE) == b"u" * LARGE  # both segments reused
        assert grown(before)["reused_segments"] == 2
    # Once both ends are done (the server sees the comm close), nothing is left but the
    # cache: no descriptor, no mapping.
    await wait_until(lambda: [shm.cache().clear(), gc.collect(), memfds() == ([], [])][2],
                     what=memfds)


async def test_the_last_side_channel_to_close_frees_the_cached_segments(monkeypatch):
    """Nobody is left to lend segments to: a closed in-process cluster keeps no memfd."""
    monkeypatch.setattr(shm, "_open_channels", weakref.WeakSet())
    monkeypatch.setattr(shm, "_cache", None)
    one, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    first, second = shm.SharedChannel(one), shm.SharedChannel(other)
    shm.cache().put(segments.Segment(segments.capacity(LARGE)))
    first.close()
    assert shm.cache().nbytes == segments.capacity(LARGE)  # the other may still send
    second.close()
    assert shm.cache().nbytes == 0
    assert memfds() == ([], [])


async def test_past_its_budget_of_mappings_a_receiver_copies_frames_out(
        sharing_server, monkeypatch):
    monkeypatch.setattr(segments, "_BUDGET", 0)
    before = counts()
    async with rpc(sharing_server.address) as r:
        back = await r.echo(data=np.arange(LARGE // 8, dtype="f8"))
    assert np.array_equal(back, np.arange(LARGE // 8, dtype="f8"))
    assert back.flags.writeable
    assert grown(before)["copied_frames"] == 2
    assert segments._mapped == 0


# -- around it -------------------------------------------------------------------------


async def test_turned_off_in_config_no_side_channel_and_the_same_values():
    with corral.config.set({"comm.shared-memory.enabled": False}):
        async with Server({"echo": echo}, shared_memory=True) as server:
            await server.listen("tcp://127.0.0.1:0")
            assert server.shared_listener is None
            before = counts()
            async with rpc(server.address) as r:
                assert await r.echo(data=b"y" * LARGE) == b"y" * LARGE
    assert grown(before) == {}


async def test_when_no_memfd_can_be_made_frames_take_the_socket(sharing_server, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    async with rpc(sharing_server.address) as r:
        await r.echo(data=b"warm")
        shm.cache().clear()
        monkeypatch.setattr(os, "memfd_create", full)
        before = counts()
        assert await r.echo(data=b"z" * LARGE) == b"z" * LARGE
    assert grown(before) == {"fallback_frames": 2}


async def test_a_peer_on_another_host_gets_no_side_channel(sharing_server, monkeypatch):
    monkeypatch.setattr(shm, "same_host", lambda host_id: False)
    comm = await connect(sharing_server.address)
    assert comm.shared is None
    before = counts()
    await comm.write({"op": "echo", "data": b"w" * LARGE})
    assert await comm.read() == b"w" * LARGE
    await comm.close()
    assert grown(before) == {}


async def test_a_listener_that_is_gone_means_the_socket(sharing_server):
    sharing_server.shared_listener.stop()
    comm = await connect(sharing_server.address)
    assert comm.shared is None
    await comm.write({"op": "echo", "data": b"v" * LARGE})
    assert await comm.read() == b"v" * LARGE
    await comm.close()


# -- who can reach a segment -----------------------------------------------------------


async def test_only_the_authenticated_peer_gets_a_ticket_and_a_ticket_serves_once():
    security = Security(token="right")
    async with Server({"echo": echo}, security=security, shared_memory=True) as server:
        await server.listen("tcp://127.0.0.1:0")
        listener = server.shared_listener
        with pytest.raises(AuthenticationError):
            await connect(server.address, security=Security(token="wrong"))
        assert listener._tickets == {}  # a peer that failed to prove itself got none

        issued: list[bytes] = []
        offer = listener.offer
        listener.offer = lambda attach: issued.append(offer(attach)) or issued[-1]
        comm = await connect(server.address, security=security)
        assert comm.shared is not None
        for ticket in (issued[0], os.urandom(shm.TICKET_BYTES)):  # spent, then made up
            assert await _present(listener.name, ticket) == (b"", [])
        await comm.close()


async def _present(name: str, ticket: bytes) -> tuple[bytes, list[int]]:
    """What a listener sends back to whoever connects and presents ``ticket``."""
    def attempt() -> tuple[bytes, list[int]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(10)
            sock.connect(name)
            sock.send(ticket)
            data, fds, _, _ = socket.recv_fds(sock, 64, 4)
            return data, fds

    return await asyncio.to_thread(attempt)


# -- between processes -----------------------------------------------------------------


def make(nbytes):
    return np.arange(nbytes, dtype="u1")


def checksum_and_writable(array):
    array[0] = 1  # writable, as it would be through the socket
    return int(array[1:].sum()), array.flags.writeable


def shared_stats():
    from corral.comm import shm

    return dict(shm.stats)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def test_worker_to_worker_and_client_to_worker_go_through_shared_memory(client):
    first, second = sorted(client.nthreads())
    before = client.run(shared_stats)
    local = counts()
    made = client.submit(make, LARGE, workers=[first])
    total, writable = client.submit(checksum_and_writable, made, workers=[second]).result()
    assert (total, writable) == (int(make(LARGE)[1:].sum()), True)
    result = made.result()  # the client fetches it from the first worker
    assert np.array_equal(result, make(LARGE))
    assert result.flags.writeable
    [scattered] = client.scatter([make(LARGE)], workers=[second])
    assert client.submit(checksum_and_writable, scattered, workers=[second]).result()[0]
    after = client.run(shared_stats)
    assert after[first]["sent_frames"] - before[first]["sent_frames"] == 2  # peer, client
    assert after[second]["received_frames"] - before[second]["received_frames"] == 2
    assert grown(local)["received_frames"] == 1
    assert grown(local)["sent_frames"] == 1


def test_a_killed_worker_holding_shared_data_leaves_nothing_in_dev_shm(client):
    before = set(os.listdir("/dev/shm"))
    first, second = sorted(client.nthreads())
    made = client.submit(make, LARGE, workers=[first])
    client.submit(checksum_and_writable, made, workers=[second]).result()
    pid = client.run(os.getpid, workers=[second])[second]
    os.kill(pid, signal.SIGKILL)
    wait_until_blocking(lambda: len(client.nthreads()) == 2 and second not in
                        client.nthreads(), timeout=30, what="the nanny restarts it")
    assert set(os.listdir("/dev/shm")) - before == set()
    assert client.submit(checksum_and_writable, made, workers=[first]).result()[1]
