"""Token authentication: who gets in, nothing unpickled before that, the token stays home.

The attacks here speak the wire by hand (see ``tests/_helpers.py``); their pickle payload
creates a file when it is loaded, and the positive controls show that it really does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import pickle
import string
from pathlib import Path

import msgpack
import pytest

from corral.core import connect, rpc
from corral.exceptions import (
    AuthenticationError,
    DeserializationError,
    HandshakeError,
    VersionMismatchError,
)
from corral.protocol import ConnectionOptions, MessageCodec
from corral.protocol.serialize import EXT_PICKLE
from corral.security import Security
from tests._helpers import (
    MAGIC,
    RawPeer,
    add,
    assert_serves,
    echo,
    handshake_frame,
    hello_body,
    hmac_proof,
    host_port,
    pack_message,
    raw_peer,
    serving,
    unpack_handshake,
    wait_until,
    warnings_from,
)

HANDLERS = {"add": add, "echo": echo}


@pytest.fixture
def security():
    return Security.generate()


@pytest.fixture
async def guarded(security):
    async with serving(HANDLERS, security=security) as server:
        yield server


@pytest.fixture
async def open_server():
    async with serving(HANDLERS) as server:
        yield server


async def call_via_rpc(address, security):
    async with rpc(address, security=security, timeout=5) as r:
        return await r.add(x=1, y=2)


async def call_via_connect(address, security):
    comm = await connect(address, timeout=5, security=security)
    try:
        await comm.write({"op": "add", "x": 1, "y": 2})
        return await comm.read()
    finally:
        await comm.close()


CALLERS = [call_via_rpc, call_via_connect]
CALLER_IDS = ["rpc", "connect"]


# -- who gets in -------------------------------------------------------------------------------


@pytest.mark.parametrize("call", CALLERS, ids=CALLER_IDS)
async def test_right_token_is_let_in(guarded, security, call):
    assert await call(guarded.address, Security(token=security.token)) == 3


@pytest.mark.parametrize("call", CALLERS, ids=CALLER_IDS)
async def test_wrong_token_is_refused(guarded, security, call):
    wrong = Security.generate()
    with pytest.raises(AuthenticationError, match="authentication failed") as info:
        await call(guarded.address, wrong)
    assert wrong.token not in str(info.value)
    assert security.token not in str(info.value)
    await assert_serves(guarded.address, security)


@pytest.mark.parametrize("call", CALLERS, ids=CALLER_IDS)
async def test_missing_token_is_refused(guarded, security, call):
    with pytest.raises(AuthenticationError, match="authentication failed"):
        await call(guarded.address, None)
    await assert_serves(guarded.address, security)


@pytest.mark.parametrize("call", CALLERS, ids=CALLER_IDS)
async def test_client_with_token_refuses_a_server_that_cannot_prove_itself(open_server, call):
    with pytest.raises(AuthenticationError, match="authentication failed"):
        await call(open_server.address, Security.generate())
    await assert_serves(open_server.address)


# -- nothing is unpickled before authentication ------------------------------------------------


class Evil:
    """Loading this pickle creates the file at ``path``: proof that it was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def evil_frames(path: Path) -> list[bytes]:
    """A request whose argument is the evil pickle, in corral's own message format."""
    frames = MessageCodec().encode({"op": "add", "x": Evil(path), "y": 1})
    assert len(frames) == 2  # msgpack head + the pickle as its own frame
    return [bytes(f) for f in frames]


def test_evil_payload_is_live(tmp_path):
    """Control: loading the payload really creates the file (so its absence means something)."""
    path = tmp_path / "pwned"
    MessageCodec(allow_pickle=True).decode(evil_frames(path))
    assert path.exists()


async def send_regardless(peer: RawPeer, data: bytes) -> None:
    """Write even if the server already hung up (an attacker does not care)."""
    with contextlib.suppress(ConnectionError):
        await peer.send_bytes(data)


async def instead_of_hello(peer, path, token):
    await peer.send(evil_frames(path))


async def inside_hello_frame(peer, path, token):
    head, payload = evil_frames(path)
    await peer.send([MAGIC + b"\x01\x00" + head, payload])


async def as_one_hello_frame(peer, path, token):
    ref = msgpack.ExtType(EXT_PICKLE, msgpack.packb([[1, None]]))
    await peer.send([handshake_frame({"nonce": ref, "auth": True})])


async def pipelined_with_hello(peer, path, token):
    hello = pack_message([handshake_frame(hello_body(auth=True))])
    await peer.send_bytes(hello + pack_message(evil_frames(path)))


async def instead_of_proof(peer, path, token):
    _, challenge = await peer.hello(auth=True)
    assert "error" not in challenge
    await peer.send(evil_frames(path))


async def after_hello_without_token(peer, path, token):
    _, challenge = await peer.hello(auth=False)
    assert "authentication failed" in challenge["error"]
    await send_regardless(peer, pack_message(evil_frames(path)))


async def with_wrong_proof_pipelined(peer, path, token):
    nonce, challenge = await peer.hello(auth=True)
    proof = hmac_proof("not-the-token", b"corral-client", challenge["nonce"], nonce)
    attempt = pack_message([handshake_frame({"proof": proof})])
    await peer.send_bytes(attempt + pack_message(evil_frames(path)))
    verdict = unpack_handshake(await peer.read_message())
    assert "authentication failed" in verdict["error"]


async def with_wrong_proof_then_pickle(peer, path, token):
    nonce, challenge = await peer.hello(auth=True)
    proof = hmac_proof("not-the-token", b"corral-client", challenge["nonce"], nonce)
    await peer.send([handshake_frame({"proof": proof})])
    verdict = unpack_handshake(await peer.read_message())
    assert "authentication failed" in verdict["error"]
    await send_regardless(peer, pack_message(evil_frames(path)))


async def with_no_proof_pipelined(peer, path, token):
    await peer.hello(auth=True)
    attempt = pack_message([handshake_frame({"proof": None})])
    await peer.send_bytes(attempt + pack_message(evil_frames(path)))


ATTACKS = [
    instead_of_hello,
    inside_hello_frame,
    as_one_hello_frame,
    pipelined_with_hello,
    instead_of_proof,
    after_hello_without_token,
    with_wrong_proof_pipelined,
    with_wrong_proof_then_pickle,
    with_no_proof_pipelined,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
async def test_no_pickle_is_loaded_before_authentication(guarded, security, tmp_path, attack):
    path = tmp_path / "pwned"
    async with raw_peer(guarded.address) as peer:
        await attack(peer, path, security.token)
        await peer.closed_by_server()  # the server has dealt with everything we sent
    assert not path.exists()
    await assert_serves(guarded.address, security)
    assert not path.exists()


async def test_control_pickle_is_loaded_after_authentication(guarded, security, tmp_path):
    """The same raw peer and payload, authenticated: now the server does unpickle it.

    This shows the attacks above reach the unpickler if the handshake lets them through.
    """
    path = tmp_path / "pwned"
    async with raw_peer(guarded.address) as peer:
        await peer.authenticate(security.token)
        await peer.send(evil_frames(path))
        await peer.read_message()  # the reply (an error: None + 1)
    assert path.exists()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda e: e,
        lambda e: (1, e),
        lambda e: [{"deep": [e]}],
        lambda e: {e},
        lambda e: frozenset([(e,)]),
    ],
    ids=["bare", "in tuple", "nested", "in set", "in frozenset of tuple"],
)
def test_codec_without_pickle_refuses_to_load(tmp_path, wrap):
    path = tmp_path / "pwned"
    frames = MessageCodec().encode({"op": "echo", "data": wrap(Evil(path))})
    with pytest.raises(DeserializationError):
        MessageCodec(allow_pickle=False).decode(frames)
    assert not path.exists()
    MessageCodec(allow_pickle=True).decode(frames)  # control: the payload is live
    assert path.exists()


# -- the token stays home ----------------------------------------------------------------------


class RecordingProxy:
    """A TCP proxy on 127.0.0.1 that records every byte in both directions."""

    def __init__(self, upstream: str) -> None:
        self.upstream = host_port(upstream)
        self.sent = bytearray()  # client -> server
        self.received = bytearray()  # server -> client
        self.active = 0
        self.connections = 0

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = f"tcp://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await wait_until(lambda: self.active == 0, what="proxied connections to end")
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader, writer) -> None:
        self.active += 1
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            await asyncio.gather(
                self._pipe(reader, up_writer, self.sent),
                self._pipe(up_reader, writer, self.received),
            )
        finally:
            self.active -= 1

    @staticmethod
    async def _pipe(reader, writer, record: bytearray) -> None:
        try:
            while data := await reader.read(65536):
                record += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def encodings_of(token: str) -> list[bytes]:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return [token.encode(), raw, raw.hex().encode(), token.encode("utf-16-le")]


async def test_token_never_crosses_the_wire(guarded, security):
    wrong = Security.generate()
    async with RecordingProxy(guarded.address) as proxy:
        async with rpc(proxy.address, security=security) as r:
            assert await r.echo(data="hello") == "hello"
        with pytest.raises(AuthenticationError):
            await connect(proxy.address, security=wrong)
    assert proxy.connections == 2
    for recorded in (proxy.sent, proxy.received):
        assert MAGIC in recorded  # the handshakes were recorded
        assert b"hello" in recorded  # and the call after them
    traffic = bytes(proxy.sent) + bytes(proxy.received)
    for token in (security.token, wrong.token):
        for encoded in encodings_of(token):
            assert encoded not in traffic


def test_security_repr_hides_token():
    s = Security.generate()
    shown = [repr(s), str(s), f"{s!r}", repr([s]), repr(ConnectionOptions(security=s))]
    for text in shown:
        assert s.token not in text
    assert "redacted" in repr(s)


def test_generated_tokens_have_256_bits_and_differ():
    a, b = Security.generate().token, Security.generate().token
    assert a != b
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for token in (a, b):
        assert len(token) >= 43
        assert set(token) <= alphabet
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) >= 32


# -- protocol versions -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 65535])
async def test_hello_with_another_version_is_told_why(guarded, security, caplog, version):
    caplog.set_level(logging.WARNING, logger="corral.core")
    async with raw_peer(guarded.address) as peer:
        await peer.send([handshake_frame(hello_body(auth=True), version=version)])
        reply = unpack_handshake(await peer.read_message())
        await peer.closed_by_server()
    assert f"protocol version {version}" in reply["error"]
    await wait_until(lambda: warnings_from(caplog), what="the rejection to be logged")
    assert any(f"version {version}" in m for m in warnings_from(caplog))
    await assert_serves(guarded.address, security)


@contextlib.asynccontextmanager
async def fake_server(conversation):
    """A TCP server that runs ``await conversation(peer)`` with each peer (a ``RawPeer``)."""
    active: set[asyncio.StreamWriter] = set()

    async def handle(reader, writer):
        active.add(writer)
        try:
            await conversation(RawPeer(reader, writer))
            await reader.read()  # until the client hangs up
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            active.discard(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        await wait_until(lambda: not active, what="the fake server's connections to end")
        server.close()
        await server.wait_closed()


def answer_once(reply: bytes):
    async def conversation(peer: RawPeer) -> None:
        await peer.read_message()
        await peer.send_bytes(reply)

    return conversation


async def test_client_refuses_a_server_of_another_version():
    welcome = {"role": "server", "name": "", "nonce": bytes(32), "compression": None}
    reply = pack_message([handshake_frame(welcome, version=1)])
    async with fake_server(answer_once(reply)) as address:
        with pytest.raises(VersionMismatchError, match="protocol version 1"):
            await connect(address, timeout=5)


async def test_client_pointed_at_an_http_server_is_told_so():
    reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"  # what aiohttp says
    async with fake_server(answer_once(reply)) as address:
        async with asyncio.timeout(5):
            with pytest.raises(HandshakeError, match=r"answered in HTTP.*dashboard") as info:
                await connect(address, timeout=5)
    assert "frames" not in str(info.value)


async def test_http_request_to_a_corral_port_is_named_in_the_log(guarded, security, caplog):
    caplog.set_level(logging.WARNING, logger="corral.core")
    async with raw_peer(guarded.address) as peer:
        await peer.send_bytes(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await peer.closed_by_server()
    await wait_until(lambda: warnings_from(caplog), what="the rejection to be logged")
    (line,) = warnings_from(caplog)
    assert "HTTP request to a corral port" in line
    await assert_serves(guarded.address, security)


async def test_client_refuses_an_impostor_that_cannot_prove_the_token():
    """A server that accepts any proof but cannot prove the token itself is refused.

    The client proves first (so the impostor does hear a proof, just as a real server
    would), then stops at the server's missing proof: no message goes out after that.
    """
    after_verdict: list[list[bytes]] = []

    async def impostor(peer: RawPeer) -> None:
        hello = unpack_handshake(await peer.read_message())
        assert hello["auth"] is True
        challenge = {"role": "server", "name": "impostor", "nonce": bytes(32),
                     "compression": None, "auth": True}
        await peer.send([handshake_frame(challenge)])
        proof = unpack_handshake(await peer.read_message())
        assert isinstance(proof["proof"], bytes)
        await peer.send([handshake_frame({"ok": True, "proof": bytes(32)})])
        with contextlib.suppress(asyncio.IncompleteReadError):
            after_verdict.append(await peer.read_message())

    async with fake_server(impostor) as address:
        with pytest.raises(AuthenticationError, match="could not prove it holds the token"):
            await connect(address, timeout=5, security=Security.generate())
    assert after_verdict == []


async def test_a_connector_gets_nothing_derived_from_the_token_before_proving(guarded, security):
    """The server's side of the exchange, up to the connector's proof, is the same whatever
    the token: a peer that only connects cannot collect material to guess it offline."""
    async with raw_peer(guarded.address) as peer:
        nonce, challenge = await peer.hello(auth=True)
        assert set(challenge) == {"role", "name", "nonce", "compression", "auth"}
        assert challenge["auth"] is True
        for label, first, second in ((b"corral-server", nonce, challenge["nonce"]),
                                     (b"corral-client", challenge["nonce"], nonce)):
            assert hmac_proof(security.token, label, first, second) not in challenge.values()
        wrong = hmac_proof("not-the-token", b"corral-client", challenge["nonce"], nonce)
        await peer.send([handshake_frame({"proof": wrong})])
        verdict = unpack_handshake(await peer.read_message())
        assert set(verdict) == {"error"}  # refused, and still no proof of the server's
        assert "authentication failed" in verdict["error"]
        await peer.closed_by_server()
    await assert_serves(guarded.address, security)


async def test_missing_token_error_names_the_ways_to_pass_one(guarded):
    with pytest.raises(AuthenticationError) as info:
        await connect(guarded.address, timeout=5)
    message = str(info.value)
    assert "requires a token" in message
    for way in ("CORRAL_TOKEN", "--scheduler-file", "--token"):
        assert way in message
    assert "\n" not in message


def test_pickled_security_is_still_usable():
    """Security travels to workers by pickle; the token must survive the trip."""
    s = Security.generate()
    assert pickle.loads(pickle.dumps(s)).token == s.token
