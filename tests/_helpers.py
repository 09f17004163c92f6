"""Helpers for the abuse, auth and fuzz tests: raw sockets that speak (or break) the wire.

A ``RawPeer`` is a plain asyncio stream to a server: it writes whatever bytes a test
wants and parses replies with its own small frame parser, so the tests check corral's
wire format against an independent reading of it rather than against corral's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import resource
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgpack
import psutil

from corral.comm.addressing import parse_address
from corral.core import Server, rpc
from corral.security import Security

LOOPBACK = "tcp://127.0.0.1:0"
MAGIC = b"CORRAL"
VERSION = 2
NONCE_BYTES = 32
_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")
MAX_REPLY_FRAMES = 16  # our own parser refuses anything bigger: a test must not allocate either


def add(comm, x, y):
    return x + y


def echo(comm, data=None):
    return data


# -- servers ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(handlers: dict[str, Callable[..., Any]], **kwargs: Any) -> AsyncIterator[Server]:
    """A ``Server`` listening on a free loopback port for the duration of the block."""
    async with Server(handlers, **kwargs) as server:
        await server.listen(LOOPBACK)
        yield server


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on loopback right now (for servers given fixed ports)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def host_port(address: str) -> tuple[str, int]:
    parsed = parse_address(address)
    assert parsed.port is not None
    return parsed.host, parsed.port


async def assert_serves(address: str, security: Security | None = None, within: float = 2.0):
    """An honest caller gets ``add`` answered promptly: the server survived what came before."""
    async with asyncio.timeout(within):
        async with rpc(address, security=security) as r:
            assert await r.add(x=1, y=2) == 3


# -- waiting on conditions: the one polling helper of the suite --------------------------------


Why = str | Callable[[], object]  # what is awaited, or a function saying what is wrong


def _polls(predicate: Callable[[], object], timeout: float, what: Why) -> Iterator[float]:
    """Yield how long to pause until ``predicate()`` holds; fail the test after ``timeout``.

    Pauses start at 1 ms and grow to 50 ms, so a quick condition is seen at once and a
    slow one (a process starting) costs little CPU.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what or predicate
            raise AssertionError(f"not within {timeout:g} s: {detail}")
        yield pause
        pause = min(pause * 2, 0.05)


async def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: Why = ""
) -> bool:
    """In a coroutine: wait until ``predicate()`` holds (True), or fail the test."""
    for pause in _polls(predicate, timeout, what):
        await asyncio.sleep(pause)
    return True


def wait_until_blocking(
    predicate: Callable[[], object], timeout: float = 10.0, what: Why = ""
) -> bool:
    """Outside the event loop: wait until ``predicate()`` holds (True), or fail the test."""
    for pause in _polls(predicate, timeout, what):
        time.sleep(pause)
    return True


def warnings_from(caplog: Any, logger: str = "corral.core") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelname == "WARNING"]


def server_side_sockets(port: int) -> int:
    """How many accepted connections on ``port`` this process still holds open on its side.

    Counted by the OS (psutil), so it sees what the server really did with its sockets:
    ESTABLISHED or CLOSE_WAIT means the server has not closed its end.
    """
    open_states = {psutil.CONN_ESTABLISHED, psutil.CONN_CLOSE_WAIT}
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status in open_states
    )


def rss() -> int:
    return psutil.Process().memory_info().rss


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit if ``needed`` descriptors would not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the wire, written by hand ---------------------------------------------------------------


def pack_message(frames: list[bytes]) -> bytes:
    """A message as it travels on a stream: ``<I count``, ``<Q length`` each, the frames."""
    header = _COUNT.pack(len(frames)) + b"".join(_LENGTH.pack(len(f)) for f in frames)
    return header + b"".join(frames)


def handshake_frame(body: dict[str, Any], version: int = VERSION, magic: bytes = MAGIC) -> bytes:
    return magic + struct.pack("<H", version) + msgpack.packb(body)


def unpack_handshake(frames: list[bytes]) -> dict[str, Any]:
    assert len(frames) == 1, frames
    data = frames[0]
    assert data[: len(MAGIC)] == MAGIC, data[:16]
    body = msgpack.unpackb(data[len(MAGIC) + 2 :], raw=False)
    assert isinstance(body, dict)
    return body


def hello_body(auth: bool = False, **overrides: Any) -> dict[str, Any]:
    body = {
        "role": "client",
        "name": "raw",
        "nonce": secrets.token_bytes(NONCE_BYTES),
        "compression": [],
        "auth": auth,
    }
    body.update(overrides)
    return body


def hmac_proof(token: str, label: bytes, first: bytes, second: bytes) -> bytes:
    """The handshake proof as the protocol documents it: HMAC-SHA256(token, label|nonce|nonce)."""
    return hmac.new(token.encode(), label + first + second, hashlib.sha256).digest()


class RawPeer:
    """One raw TCP connection to a server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: str) -> RawPeer:
        host, port = host_port(address)
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, frames: list[bytes]) -> None:
        await self.send_bytes(pack_message(frames))

    async def read_message(self) -> list[bytes]:
        """One framed message; ``asyncio.IncompleteReadError`` if the stream ends first."""
        (count,) = _COUNT.unpack(await self.reader.readexactly(_COUNT.size))
        assert 1 <= count <= MAX_REPLY_FRAMES, f"server announced {count} frames"
        lengths = struct.unpack(f"<{count}Q", await self.reader.readexactly(8 * count))
        assert sum(lengths) <= 64 * 1024 * 1024, f"server announced {lengths}"
        return [await self.reader.readexactly(n) for n in lengths]

    async def closed_by_server(self, timeout: float | None = 2.0) -> bytes:
        """Wait until the server closes this connection; return whatever it sent before."""
        received = bytearray()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += chunk
        return bytes(received)

    def reset(self) -> None:
        """Vanish: close with SO_LINGER 0, so the server sees a reset rather than a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def hello(self, auth: bool = False, **overrides: Any) -> tuple[bytes, dict[str, Any]]:
        """Send a hello and read the challenge; return our nonce and the challenge."""
        body = hello_body(auth=auth, **overrides)
        await self.send([handshake_frame(body)])
        return body["nonce"], unpack_handshake(await self.read_message())

    async def authenticate(self, token: str | None = None) -> dict[str, Any]:
        """Run the whole client handshake by hand; return the server's verdict."""
        nonce, challenge = await self.hello(auth=token is not None)
        assert "error" not in challenge, challenge
        proof = None
        if token is not None:
            proof = hmac_proof(token, b"corral-client", challenge["nonce"], nonce)
        await self.send([handshake_frame({"proof": proof})])
        verdict = unpack_handshake(await self.read_message())
        assert verdict.get("ok"), verdict
        if token is not None:  # the server proves itself last
            assert verdict["proof"] == hmac_proof(token, b"corral-server", nonce,
                                                  challenge["nonce"])
        return verdict


@contextlib.asynccontextmanager
async def raw_peer(address: str) -> AsyncIterator[RawPeer]:
    peer = await RawPeer.open(address)
    try:
        yield peer
    finally:
        peer.abort()


def parse_cli(args: list[str]) -> Any:
    """The context ``corral ARGS`` would run its command with: every flag parsed and
    checked, nothing started. The group's context is its parent, as when run for real
    (it carries ``-h``; a parentless context would fix the command's help option to
    ``--help`` alone for the rest of the session)."""
    from corral.cli import main

    name, *rest = args
    group = main.make_context("corral", [name])
    command = main.get_command(group, name)
    assert command is not None, f"no command {name!r}"
    return command.make_context(name, rest, parent=group)


def memory_watch(limit: int, thresholds: Any = None) -> Any:
    """A worker's memory watch (``corral.worker.memory_watch``) over a worker that holds
    nothing, with memory limit ``limit``."""
    import types

    from corral.worker.memory_watch import MemoryWatch
    from corral.worker.thresholds import Thresholds

    shards = types.SimpleNamespace(in_memory=0, on_disk=0, written_total=0)
    worker = types.SimpleNamespace(memory_limit=limit, thresholds=thresholds or Thresholds(),
                                   data={}, state=None,
                                   shuffles=types.SimpleNamespace(shards=shards))
    return MemoryWatch(worker)  # type: ignore[arg-type]


def filled(nbytes: int, fill: int) -> Any:
    """A task's result: ``nbytes`` bytes of ``fill`` in a NumPy array."""
    import numpy as np

    return np.full(nbytes, fill, dtype="u1")


def total(array: Any) -> int:
    """A task reading all of ``array``."""
    return int(array.sum())

