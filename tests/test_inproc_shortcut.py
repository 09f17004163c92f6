"""The in-process shortcut (corral.comm.shortcut): a server's tcp:// or tls:// address,
connected to from its own process, is served without a socket — with the same
handshake, the same refusals, and only while the server listens."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading

import pytest

from corral import Client, LocalCluster, Security, config
from corral.comm import FrameLimits, shortcut
from corral.comm import connect as raw_connect
from corral.comm.inproc import InprocComm
from corral.comm.tcp import TCPComm
from corral.core import Server, connect
from corral.exceptions import AuthenticationError, CommClosedError, ConnectTimeoutError
from tests._helpers import add, assert_serves, serving


def inc(x):
    return x + 1


@pytest.fixture
def token():
    return Security.generate()


def test_a_client_of_an_in_process_cluster_goes_in_process():
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            assert isinstance(client._core._stream.comm, InprocComm)
            assert client._core._stream.comm.peer_address == cluster.scheduler_address
            assert client.submit(inc, 1).result(timeout=30) == 2
        assert cluster.scheduler_address in shortcut._aliases
    assert cluster.scheduler_address not in shortcut._aliases


def test_turned_off_a_client_goes_over_tcp():
    with config.set({"comm.inproc-shortcut": False}):
        with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
            assert cluster.scheduler_address not in shortcut._aliases
            with Client(cluster) as client:
                assert isinstance(client._core._stream.comm, TCPComm)
                assert client.submit(inc, 1).result(timeout=30) == 2


async def test_turned_off_when_connecting_it_goes_over_tcp():
    async with serving({"add": add}) as server:
        with config.set({"comm.inproc-shortcut": False}):
            comm = await connect(server.address, timeout=5)
        assert isinstance(comm, TCPComm)
        comm.abort()


async def test_the_token_is_still_checked(token):
    async with serving({"add": add}, security=token) as server:
        comm = await connect(server.address, timeout=5, security=token)
        assert isinstance(comm, InprocComm)
        comm.abort()
        with pytest.raises(AuthenticationError, match="requires a token"):
            await connect(server.address, timeout=5)
        with pytest.raises(AuthenticationError, match="different token"):
            await connect(server.address, timeout=5, security=Security.generate())
        await assert_serves(server.address, security=token)


async def test_nothing_large_before_the_handshake():
    """The pre-authentication frame limits hold on the shortcut as on a socket."""
    async with serving({"add": add}) as server:
        comm = await raw_connect(server.address, timeout=5, limits=FrameLimits())
        assert isinstance(comm, InprocComm)
        with pytest.raises(CommClosedError, match="rejected"):
            await comm.write_frames([b"x" * (1 << 20)])
        await assert_serves(server.address)


async def test_the_alias_goes_with_the_server():
    server = Server({"add": add})
    await server.listen("tcp://127.0.0.1:0")
    address = server.address
    assert address in shortcut._aliases
    await server.close()
    assert address not in shortcut._aliases
    with pytest.raises(ConnectTimeoutError):
        await connect(address, timeout=0.3)


async def test_all_interfaces_also_answer_on_loopback():
    async with Server({"add": add}) as server:
        await server.listen("tcp://:0")
        loopback = f"tcp://127.0.0.1:{server.port}"
        comm = await connect(loopback, timeout=5)
        assert isinstance(comm, InprocComm)
        comm.abort()
    assert loopback not in shortcut._aliases


def test_a_server_on_another_threads_loop():
    """Client and server on different loops: delivery crosses threads."""
    ready = threading.Event()
    stop: list[asyncio.Future[None]] = []
    addresses: list[str] = []

    async def serve():
        async with serving({"add": add}) as server:
            stop.append(asyncio.get_running_loop().create_future())
            addresses.append(server.address)
            ready.set()
            await stop[0]

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)

        async def call():
            comm = await connect(addresses[0], timeout=5)
            assert isinstance(comm, InprocComm)
            comm.abort()
            await assert_serves(addresses[0])

        asyncio.run(call())
    finally:
        loop = stop[0].get_loop()
        loop.call_soon_threadsafe(stop[0].set_result, None)
        thread.join(10)
    assert addresses[0] not in shortcut._aliases


async def test_a_forked_child_has_no_aliases():
    async with serving({"add": add}):
        assert shortcut._aliases
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave at once
            os.write(write, str(len(shortcut._aliases)).encode())
            os._exit(0)
        os.close(write)
        try:
            assert os.read(read, 16) == b"0"
        finally:
            os.close(read)
            os.waitpid(pid, 0)


def test_tls_goes_in_process_and_still_checks_certificates():
    from tests.test_security import _refusal

    security = Security.temporary()
    with LocalCluster(n_workers=0, dashboard_address=None, security=security) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        assert address in shortcut._aliases
        with Client(cluster) as client:
            assert isinstance(client._core._stream.comm, InprocComm)
        error = _refusal(address, Security(token=security.token, tls_ca_file=security.tls_ca_file))
        assert "did not accept our client certificate" in str(error)


async def test_after_the_handshake_messages_go_as_copies_not_frames(monkeypatch):
    """Once authenticated, each end hands the other the codec's copy of a message: no
    frames, the value the peer would have decoded, nothing shared that either may
    change. A value only pickling can carry still goes as frames."""
    kept = []

    def keep(comm, data):
        kept.append(data)
        return data

    async with serving({"keep": keep}) as server:
        comm = await connect(server.address, timeout=5)
        assert isinstance(comm, InprocComm)
        assert comm.by_reference
        framed = []
        original = InprocComm.write_frames_nowait
        monkeypatch.setattr(InprocComm, "write_frames_nowait",
                            lambda self, frames: framed.append(frames) or original(self, frames))
        sent = {"xs": [1, (2, {3})], "blob": bytearray(b"ab"), "key": b"k"}
        await comm.write({"op": "keep", "data": sent})
        assert await comm.read() == sent
        assert framed == []
        sent["xs"].append(4)
        sent["blob"][0] = ord("z")
        assert kept[0] == {"xs": [1, (2, {3})], "blob": bytearray(b"ab"), "key": b"k"}
        assert kept[0]["key"] is sent["key"]  # immutable: handed as is

        await comm.write({"op": "keep", "data": Point(1, 2)})  # pickled, as over TCP
        assert await comm.read() == Point(1, 2)
        assert len(framed) == 2
        assert kept[1] == Point(1, 2)
        comm.abort()


@dataclasses.dataclass
class Point:
    x: int
    y: int
