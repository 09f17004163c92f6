"""Server, connect, rpc and ConnectionPool through the public API (DESIGN.md's examples)."""

from __future__ import annotations

import asyncio

import pytest

from corral.core import (
    BatchedSend,
    CommClosedError,
    ConnectionPool,
    RemoteError,
    Server,
    connect,
    rpc,
)
from corral.exceptions import ConnectTimeoutError, UnknownOperationError
from tests._helpers import wait_until
from tests.conftest import HANDLERS


async def read_until_error(comm) -> Exception:
    """Read (e.g. messages already in flight) until the comm fails; return the error."""
    while True:
        try:
            await comm.read()
        except Exception as e:
            return e


async def write_until_error(comm, attempts: int) -> Exception | None:
    for _ in range(attempts):
        try:
            await comm.write({"op": "add", "x": 1, "y": 1})
        except Exception as e:
            return e
    return None


async def test_design_example_add_over_connect(server):
    comm = await connect(server.address)
    await comm.write({"op": "add", "x": 1, "y": 2})
    assert await comm.read() == 3
    await comm.close()
    assert comm.closed()


async def test_streaming_handler_read_three_times(server):
    comm = await connect(server.address)
    await comm.write({"op": "ticks", "interval": 0.01})
    assert [await comm.read() for _ in range(3)] == [1, 2, 3]
    await comm.close()


async def test_many_requests_on_one_comm(server):
    comm = await connect(server.address)
    for i in range(50):
        await comm.write({"op": "add", "x": i, "y": 1})
        assert await comm.read() == i + 1
    await comm.close()


async def test_rpc_sync_context_manager(server):
    with rpc(server.address) as r:
        assert await r.add(x=1, y=2) == 3


async def test_rpc_async_context_manager(server):
    async with rpc(server.address) as r:
        assert await r.add(x=1, y=2) == 3
        assert await r.echo(data=[1, (2, 3), {"a": {4}}]) == [1, (2, 3), {"a": {4}}]


async def test_200_overlapping_calls_on_one_rpc(server):
    async with rpc(server.address) as r:
        results = await asyncio.gather(*(r.slow_add(x=i, y=1, delay=0.01) for i in range(200)))
    assert results == [i + 1 for i in range(200)]


async def test_rpc_reraises_handler_exception_type_with_remote_traceback(server):
    async with rpc(server.address) as r:
        with pytest.raises(TypeError) as info:
            await r.add(x=1, y="a")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes
    assert "in add" in notes


async def test_unknown_op_and_bad_arguments_are_the_callers_errors(server):
    async with rpc(server.address) as r:
        with pytest.raises(UnknownOperationError, match="unknown operation 'nope'"):
            await r.nope()
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            await r.add(x=1, y=2, z=3)
        assert await r.add(x=1, y=2) == 3


async def test_exception_that_cannot_be_rebuilt_arrives_as_remote_error(tcp_server):
    class Local(Exception):
        def __reduce__(self):
            raise TypeError("not picklable")

    def fail(comm):
        raise Local("boom")

    tcp_server.handlers["fail"] = fail
    async with rpc(tcp_server.address) as r:
        with pytest.raises(RemoteError) as info:
            await r.fail()
    assert info.value.type_name.endswith("Local")
    assert "boom" in info.value.message
    assert "raise Local" in info.value.traceback_text


async def test_reply_false_sends_no_reply(tcp_server):
    seen = asyncio.Event()

    def note(comm):
        seen.set()
        return "ignored"

    tcp_server.handlers["note"] = note
    comm = await connect(tcp_server.address)
    await comm.write({"op": "note", "reply": False})
    await comm.write({"op": "add", "x": 2, "y": 2})
    assert await comm.read() == 4  # the first reply would have been "ignored"
    assert seen.is_set()
    await comm.close()


async def test_close_key_closes_the_comm_after_replying(server):
    comm = await connect(server.address)
    await comm.write({"op": "add", "x": 1, "y": 1, "close": True})
    assert await comm.read() == 2
    with pytest.raises(CommClosedError):
        await comm.read()


async def test_listen_on_a_bare_port_and_all_interfaces():
    async with Server(HANDLERS) as s:
        await s.listen(0)
        assert s.port
        assert s.port > 0
        async with rpc(f"127.0.0.1:{s.port}") as r:
            assert await r.add(x=1, y=2) == 3
    async with Server(HANDLERS) as s:
        await s.listen("tcp://:0")
        async with rpc(f"tcp://127.0.0.1:{s.port}") as r:
            assert await r.add(x=2, y=2) == 4


async def test_ipv6_loopback():
    async with Server(HANDLERS) as s:
        try:
            await s.listen("tcp://[::1]:0")
        except OSError:
            pytest.skip("IPv6 loopback is not available on this machine")
        assert s.address.startswith("tcp://[::1]:")
        async with rpc(s.address) as r:
            assert await r.add(x=1, y=2) == 3


async def test_server_close_ends_live_comms_and_streaming_handlers(tcp_server):
    comm = await connect(tcp_server.address)
    await comm.write({"op": "ticks", "interval": 0.01})
    assert await comm.read() == 1
    await tcp_server.close()
    assert isinstance(await read_until_error(comm), CommClosedError)


async def test_connect_to_nothing_times_out_naming_the_address():
    async with Server(HANDLERS) as s:
        await s.listen("tcp://127.0.0.1:0")
        address = s.address
    with pytest.raises(ConnectTimeoutError, match=address.replace(".", r"\.")) as info:
        await connect(address, timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, OSError)


async def test_cancelling_a_connect_mid_handshake_is_a_cancellation():
    """Not a HandshakeError: a task cancelled while closing must end cancelled, or asyncio
    logs its 'exception was never retrieved'."""
    accepted, hung_up = asyncio.Event(), asyncio.Event()

    async def silent(reader, writer):  # accepts, never answers the handshake
        accepted.set()
        await reader.read()  # until the cancelled attempt drops the connection
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    attempt = asyncio.ensure_future(connect(f"tcp://127.0.0.1:{port}", timeout=10))
    await accepted.wait()
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    await asyncio.wait_for(hung_up.wait(), 5)
    listener.close()
    await listener.wait_closed()


async def test_connect_retries_until_the_server_appears():
    async with Server(HANDLERS) as probe:
        await probe.listen("tcp://127.0.0.1:0")
        port = probe.port
    server = Server(HANDLERS)

    async def start_later():
        await asyncio.sleep(0.2)  # time itself is under test: the server is late
        await server.listen(f"tcp://127.0.0.1:{port}")

    starter = asyncio.ensure_future(start_later())
    comm = await connect(f"tcp://127.0.0.1:{port}", timeout=5)
    await comm.write({"op": "add", "x": 1, "y": 2})
    assert await comm.read() == 3
    await comm.close()
    await starter
    await server.close()


async def test_dead_peer_raises_comm_closed_on_read_and_write(server):
    comm = await connect(server.address)
    await server.close()
    with pytest.raises(CommClosedError):
        await comm.read()
    # The first writes after the close may still land in socket buffers.
    assert isinstance(await write_until_error(comm, 100), CommClosedError)


async def test_rpc_after_server_restart_reconnects():
    async with Server(HANDLERS) as s:
        await s.listen("tcp://127.0.0.1:0")
        address = s.address
        r = rpc(address)
        assert await r.add(x=1, y=1) == 2
        (pooled,) = r._pool._idle[address]
    await wait_until(pooled.closed, what="the pooled comm closed")
    async with Server(HANDLERS) as s:
        await s.listen(address)
        # The pooled comm saw its peer go; the pool notices and connects afresh.
        assert await r.add(x=2, y=2) == 4
    await r.close_rpc()


async def test_connection_pool_never_exceeds_its_limit(server):
    pool = ConnectionPool(limit=5)
    peak = 0

    async def call(i):
        nonlocal peak
        result = await pool(server.address).slow_add(x=i, y=0, delay=0.005)
        peak = max(peak, pool.open)
        return result

    results = await asyncio.gather(*(call(i) for i in range(100)))
    assert results == list(range(100))
    assert peak <= 5
    assert pool.open <= 5
    await pool.close()


async def test_connection_pool_shares_its_limit_across_addresses():
    async with Server(HANDLERS) as a, Server(HANDLERS) as b:
        await a.listen("tcp://127.0.0.1:0")
        await b.listen("tcp://127.0.0.1:0")
        pool = ConnectionPool(limit=2)
        for _ in range(3):
            results = await asyncio.gather(
                *(pool(addr).add(x=1, y=1) for addr in [a.address, b.address] * 4)
            )
            assert results == [2] * 8
            assert pool.open <= 2
        await pool.close()
        assert pool.open == 0


async def test_cancelled_call_does_not_poison_the_pool():
    reached = asyncio.Event()

    async def hang(comm):
        reached.set()
        await asyncio.sleep(10)  # still running when the caller gives up

    async with Server({**HANDLERS, "hang": hang}) as server:
        await server.listen("tcp://127.0.0.1:0")
        async with rpc(server.address) as r:
            task = asyncio.ensure_future(r.hang())
            await asyncio.wait_for(reached.wait(), 5)  # the request reached the server
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await r.add(x=3, y=4) == 7


async def test_batched_send_coalesces_bursts(tcp_server):
    received: list = []
    done = asyncio.Event()

    async def stream(comm, expected=0):
        while len(received) < expected:
            batch = await comm.read()
            received.append(batch)
            if sum(len(b) for b in received) >= expected:
                done.set()
                return "done"

    tcp_server.handlers["stream"] = stream
    comm = await connect(tcp_server.address)
    await comm.write({"op": "stream", "expected": 1000, "reply": False})
    batched = BatchedSend(interval=0.01)
    batched.start(comm)
    for i in range(1000):
        batched.send({"i": i})
    await asyncio.wait_for(done.wait(), 5)
    flat = [m["i"] for batch in received for m in batch]
    assert flat == list(range(1000))
    assert len(received) < 10  # a burst becomes a few writes, not a thousand
    await batched.close()
    with pytest.raises(CommClosedError):
        batched.send({"late": True})
