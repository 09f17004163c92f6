"""A live server against peers that break the protocol, stall, vanish or misbehave.

Every test ends with an honest ``rpc`` call that must be answered promptly: a bad peer
may lose its own connection, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pickle
import random
import struct
import threading

import msgpack
import pytest

from corral import config
from corral.comm import DEFAULT_LIMITS, PRE_AUTH_LIMITS, FrameLimits
from corral.core import CommClosedError, ErrorReply, RemoteError, connect, rpc, send_recv
from corral.exceptions import ProtocolError, UnknownOperationError
from corral.protocol.serialize import EXT_FRAME, EXT_PICKLE
from tests._helpers import (
    RawPeer,
    add,
    assert_serves,
    echo,
    handshake_frame,
    hello_body,
    host_port,
    raise_fd_limit,
    raw_peer,
    rss,
    server_side_sockets,
    serving,
    unpack_handshake,
    wait_until,
    warnings_from,
)


class CustomError(Exception):
    pass


class UnpicklableError(Exception):
    """Holds a lock, so neither pickle nor cloudpickle can carry it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class UnrebuildableError(Exception):
    """Pickles fine, but unpickling calls ``__init__`` with one argument and fails."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def raise_custom(comm):
    raise CustomError("custom failure 17")


def raise_unpicklable(comm):
    raise UnpicklableError("cannot travel 23")


def raise_unrebuildable(comm):
    raise UnrebuildableError("left", "right")


def return_unserializable(comm):
    return {"lock": threading.Lock()}


HANDLERS = {
    "add": add,
    "echo": echo,
    "raise_custom": raise_custom,
    "raise_unpicklable": raise_unpicklable,
    "raise_unrebuildable": raise_unrebuildable,
    "return_unserializable": return_unserializable,
}


@pytest.fixture
async def live():
    async with serving(HANDLERS) as server:
        yield server


@pytest.fixture
def warnings_log(caplog):
    caplog.set_level(logging.WARNING, logger="corral.core")
    return caplog


async def expect_rejection_logged(caplog, count: int = 1) -> None:
    await wait_until(lambda: len(warnings_from(caplog)) >= count, what="a WARNING from corral.core")


# -- garbage instead of a handshake ------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_random_bytes_are_dropped_with_a_logged_reason(live, warnings_log, seed):
    data = random.Random(seed).randbytes(4096)
    async with raw_peer(live.address) as peer:
        await peer.send_bytes(data)
        assert await peer.closed_by_server() == b""
    await expect_rejection_logged(warnings_log)
    assert any("rejected connection" in m for m in warnings_from(warnings_log))
    await assert_serves(live.address)


async def test_framed_garbage_gets_a_protocol_error_reply(live, warnings_log):
    async with raw_peer(live.address) as peer:
        await peer.send([random.Random(3).randbytes(100)])
        reply = unpack_handshake(await peer.read_message())
        assert "corral protocol" in reply["error"]
        await peer.closed_by_server()
    await expect_rejection_logged(warnings_log)
    await assert_serves(live.address)


async def test_http_request_is_dropped(live, warnings_log):
    async with raw_peer(live.address) as peer:
        await peer.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await peer.closed_by_server()
    await expect_rejection_logged(warnings_log)
    await assert_serves(live.address)


async def test_hello_with_malformed_fields_is_rejected_and_logged(live, warnings_log):
    """A hello that decodes but carries a field of the wrong type (``compression: 1``).

    The server must treat it like any other broken handshake: drop the peer, log why,
    and not leave an exception escaping from the connection's task.
    """
    loop = asyncio.get_running_loop()
    unhandled: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        async with raw_peer(live.address) as peer:
            await peer.send([handshake_frame(hello_body(compression=1))])
            await peer.closed_by_server()
        gc.collect()  # an unretrieved task exception is reported when the task is collected
        assert unhandled == []
        await expect_rejection_logged(warnings_log)
    finally:
        loop.set_exception_handler(None)
    await assert_serves(live.address)


# -- absurd frame headers ----------------------------------------------------------------------


def absurd_headers(limits: FrameLimits) -> dict[str, bytes]:
    over_count = limits.max_frames + 1
    half = limits.max_message_bytes // 2 + 1
    return {
        "count 0": struct.pack("<I", 0),
        "count 2**32-1": struct.pack("<I", 2**32 - 1) + bytes(64),
        "one frame of 2**62 bytes": struct.pack("<IQ", 1, 2**62),
        "one frame just over the limit": struct.pack("<IQ", 1, limits.max_frame_bytes + 1),
        "one frame more than allowed": struct.pack(
            f"<I{over_count}Q", over_count, *[0] * over_count
        ),
        "two frames over the message limit": struct.pack("<IQQ", 2, half, half),
    }


HEADER_CASES = [
    (phase, name)
    for phase in ("handshake", "authenticated")
    for name in absurd_headers(DEFAULT_LIMITS)
]


@pytest.mark.parametrize(("phase", "case"), HEADER_CASES)
async def test_absurd_frame_header_drops_connection_before_allocating(
    live, warnings_log, phase, case
):
    limits = PRE_AUTH_LIMITS if phase == "handshake" else DEFAULT_LIMITS
    header = absurd_headers(limits)[case]
    before = rss()
    async with raw_peer(live.address) as peer:
        if phase == "authenticated":
            await peer.authenticate()
        with contextlib.suppress(ConnectionError):  # the server may hang up mid-send
            await peer.send_bytes(header + b"x" * 100)
        await peer.closed_by_server()
    await expect_rejection_logged(warnings_log)
    grown = rss() - before
    assert grown < 64 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"
    await assert_serves(live.address)


# -- peers that stop half-way ------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["handshake", "authenticated"])
@pytest.mark.parametrize("ending", ["close", "reset"])
async def test_peer_gone_mid_message(live, phase, ending):
    _, port = host_port(live.address)
    peer = await RawPeer.open(live.address)
    try:
        if phase == "authenticated":
            await peer.authenticate()
            # a frame large enough for the reader's direct path, of which half arrives
            await peer.send_bytes(struct.pack("<IQ", 1, 200_000) + bytes(100_000))
        else:
            await peer.send_bytes(struct.pack("<IQ", 1, 100) + bytes(10))
        await wait_until(lambda: server_side_sockets(port) == 1, what="server accepted the peer")
        if ending == "reset":
            peer.reset()
        else:
            peer.writer.close()
            await peer.writer.wait_closed()
        await wait_until(lambda: server_side_sockets(port) == 0, what="server closed its end")
    finally:
        peer.abort()
    await assert_serves(live.address)


# -- stalling peers ----------------------------------------------------------------------------

N_LORIS = 500


async def open_slow_lorises(address: str, n: int) -> list[RawPeer]:
    """``n`` peers that never finish the handshake: half silent, half with a partial header."""
    partial = [b"", struct.pack("<I", 1) + b"\x2a\x00", struct.pack("<IQ", 1, 90) + b"CORR"]
    peers = []
    for i in range(n):
        peer = await RawPeer.open(address)
        peers.append(peer)
        if data := partial[i % len(partial)]:
            peer.writer.write(data)
    return peers


@pytest.mark.parametrize(("max_pending", "dropped"), [(1000, 0), (50, N_LORIS - 50)])
async def test_slow_loris_peers_do_not_starve_honest_callers(max_pending, dropped):
    raise_fd_limit(4 * N_LORIS + 256)
    async with serving(HANDLERS, max_pending_handshakes=max_pending) as server:
        _, port = host_port(server.address)
        peers = await open_slow_lorises(server.address, N_LORIS)
        watchers = [asyncio.ensure_future(p.closed_by_server(timeout=None)) for p in peers]
        try:
            await wait_until(
                lambda: (
                    server_side_sockets(port) == N_LORIS - dropped
                    and sum(w.done() for w in watchers) == dropped
                ),
                timeout=10,
                what=f"server holding {N_LORIS - dropped} pending handshakes",
            )
            # the oldest are the ones dropped
            assert [i for i, w in enumerate(watchers) if w.done()] == list(range(dropped))

            await assert_serves(server.address, within=2.0)

            # the honest call was one more pending handshake, so it may have evicted one more
            assert not any(w.done() for w in watchers[dropped + 1 :])
            assert server_side_sockets(port) >= N_LORIS - dropped - 1
        finally:
            for w in watchers:
                w.cancel()
            for p in peers:
                p.abort()


async def test_silent_peer_is_dropped_after_handshake_timeout():
    async with serving(HANDLERS, handshake_timeout=0.5) as server:
        loop = asyncio.get_running_loop()
        async with raw_peer(server.address) as peer:
            start = loop.time()
            await peer.closed_by_server(timeout=3.0)
            elapsed = loop.time() - start
        assert 0.4 <= elapsed < 2.0, elapsed
        await assert_serves(server.address)


async def test_trickling_peer_is_dropped_after_handshake_timeout():
    """Bytes arriving now and then do not extend the deadline of the whole handshake."""
    async with serving(HANDLERS, handshake_timeout=0.5) as server:
        loop = asyncio.get_running_loop()
        hello = struct.pack("<IQ", 1, 200) + bytes(200)
        async with raw_peer(server.address) as peer:
            start = loop.time()

            async def trickle():
                with contextlib.suppress(ConnectionError):
                    for byte in hello:
                        await peer.send_bytes(bytes([byte]))
                        await asyncio.sleep(0.05)  # the pace of the attack is under test

            trickler = asyncio.ensure_future(trickle())
            try:
                await peer.closed_by_server(timeout=3.0)
            finally:
                trickler.cancel()
            elapsed = loop.time() - start
        assert 0.4 <= elapsed < 2.0, elapsed
        await assert_serves(server.address)


# -- authenticated peers that send too much or nonsense ----------------------------------------


async def test_oversized_message_after_authentication_closes_only_that_comm(warnings_log):
    # A peer on the network (in this process, messages are handed over, not framed)
    with config.set({"comm.inproc-shortcut": False}):
        async with serving(HANDLERS, limits=FrameLimits(max_message_bytes=1_000_000)) as server:
            async with rpc(server.address) as r:
                assert len(await r.echo(data=b"x" * 900_000)) == 900_000
                with pytest.raises(CommClosedError):
                    await r.echo(data=b"x" * 2_000_000)
            await expect_rejection_logged(warnings_log)
            assert any("exceeds the limit" in m for m in warnings_from(warnings_log))
            await assert_serves(server.address)


def pickle_message(payload: bytes) -> list[bytes]:
    """``{'op': 'echo', 'data': <pickle>}`` in corral's frame format, pickle built by hand."""
    ref = msgpack.packb([[1, None]])
    head = msgpack.packb({"op": "echo", "data": msgpack.ExtType(EXT_PICKLE, ref)})
    return [head, payload]


class _LoadsBadly:
    def __reduce__(self):
        return (int, ("not a number",))


UNDECODABLE = {
    "class that does not exist": pickle_message(
        b"\x80\x05cno_such_module_for_corral\nGhost\n)\x81."
    ),
    "pickle that raises on load": pickle_message(pickle.dumps(_LoadsBadly(), protocol=5)),
    "truncated pickle": pickle_message(b"\x80\x05K"),
    "frame 0 not msgpack": [b"\xc1"],
    "frame 0 not msgpack, two frames": [b"\xc1", b"spare"],
    "reference to a missing frame": [
        msgpack.packb(
            {"op": "echo", "data": msgpack.ExtType(EXT_FRAME, msgpack.packb([0, 7, None]))}
        ),
        b"only frame 1",
    ],
    "unknown extension type": [msgpack.packb({"op": "echo", "data": msgpack.ExtType(99, b"")})],
    "unknown compression": [
        msgpack.packb(
            {"op": "echo", "data": msgpack.ExtType(EXT_FRAME, msgpack.packb([0, 1, "zz"]))}
        ),
        b"data",
    ],
}


@pytest.mark.parametrize("case", list(UNDECODABLE))
async def test_undecodable_message_gets_error_reply_and_comm_survives(live, case):
    comm = await connect(live.address)
    try:
        await comm.write_frames(UNDECODABLE[case])
        reply = await comm.read()
        assert isinstance(reply, ErrorReply), reply
        assert reply.type_name == "DeserializationError"
        assert await send_recv(comm, {"op": "add", "x": 1, "y": 2}) == 3
    finally:
        await comm.close()
    await assert_serves(live.address)


# -- handler errors --------------------------------------------------------------------------


async def test_unknown_op(live):
    async with rpc(live.address) as r:
        with pytest.raises(UnknownOperationError, match="no_such_op"):
            await r.no_such_op(x=1)
        assert await r.add(x=1, y=2) == 3
    await assert_serves(live.address)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": 1}, "missing"),
        ({"x": 1, "y": 2, "z": 3}, "unexpected keyword"),
        ({"x": 1, "y": 2, "comm": 3}, "multiple values"),
    ],
)
async def test_bad_arguments(live, kwargs, match):
    async with rpc(live.address) as r:
        with pytest.raises(TypeError, match=match) as info:
            await r.add(**kwargs)
        assert any("Remote traceback" in note for note in info.value.__notes__)
    await assert_serves(live.address)


async def test_non_string_argument_names(live):
    comm = await connect(live.address)
    try:
        await comm.write({"op": "add", 1: 2})
        reply = await comm.read()
        assert isinstance(reply, ErrorReply)
        assert reply.type_name == "TypeError"
        assert await send_recv(comm, {"op": "add", "x": 1, "y": 2}) == 3
    finally:
        await comm.close()
    await assert_serves(live.address)


async def test_custom_exception_is_reraised_as_itself(live):
    async with rpc(live.address) as r:
        with pytest.raises(CustomError, match="custom failure 17") as info:
            await r.raise_custom()
    notes = "\n".join(info.value.__notes__)
    assert "Remote traceback" in notes
    assert "raise_custom" in notes
    await assert_serves(live.address)


async def test_unpicklable_exception_becomes_remote_error(live):
    async with rpc(live.address) as r:
        with pytest.raises(RemoteError) as info:
            await r.raise_unpicklable()
    error = info.value
    assert error.type_name == "UnpicklableError"
    assert "cannot travel 23" in error.message
    assert "raise_unpicklable" in error.traceback_text
    assert "UnpicklableError: cannot travel 23" in error.traceback_text
    await assert_serves(live.address)


async def test_exception_that_cannot_be_rebuilt_becomes_remote_error(live):
    async with rpc(live.address) as r:
        with pytest.raises(RemoteError) as info:
            await r.raise_unrebuildable()
    assert info.value.type_name == "UnrebuildableError"
    assert "left/right" in info.value.message
    assert "raise_unrebuildable" in info.value.traceback_text
    await assert_serves(live.address)


async def test_unserializable_return_value_gets_error_reply_and_comm_survives(live):
    comm = await connect(live.address)
    try:
        await comm.write({"op": "return_unserializable"})
        reply = await comm.read()
        assert isinstance(reply, ErrorReply), reply
        assert "lock" in reply.message
        assert await send_recv(comm, {"op": "echo", "data": [1, (2, 3)]}) == [1, (2, 3)]
    finally:
        await comm.close()
    await assert_serves(live.address)


@pytest.mark.parametrize(
    "message",
    [[1, 2, 3], "add", 42, None, {"x": 1}, {"op": 5}, {"op": None, "x": 1}, (("op", "add"),)],
    ids=repr,
)
async def test_message_that_is_not_an_op_dict_gets_error_reply(live, message):
    comm = await connect(live.address)
    try:
        await comm.write(message)
        reply = await comm.read()
        assert isinstance(reply, ErrorReply), reply
        assert isinstance(reply.to_exception(), ProtocolError)
        assert await send_recv(comm, {"op": "add", "x": 1, "y": 2}) == 3
    finally:
        await comm.close()
    await assert_serves(live.address)
