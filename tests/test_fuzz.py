"""Property-based fuzzing of everything that parses bytes from a peer.

The frame reader, the handshake decoder (and the handshake itself) and the message
codec must answer any input with their own error types, never with a crash of another
kind, and never by allocating more than the limits allow.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from corral.comm import DEFAULT_LIMITS, PRE_AUTH_LIMITS, Comm, FrameLimits
from corral.comm.framing import DIRECT_READ_THRESHOLD, STAGING_SIZE, FrameReader, encode_header
from corral.exceptions import (
    CommClosedError,
    DeserializationError,
    HandshakeError,
    ProtocolError,
)
from corral.protocol import MessageCodec
from corral.protocol.handshake import (
    ConnectionOptions,
    client_handshake,
    decode,
    encode,
    server_handshake,
)
from corral.protocol.serialize import EXT_FRAME, EXT_FROZENSET, EXT_PICKLE, EXT_SET, EXT_TUPLE
from corral.security import Security
from tests._helpers import MAGIC, handshake_frame, hello_body


def fuzz(examples: int) -> settings:
    """Deterministic runs (same examples every time, no example database), no deadline."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- the frame reader --------------------------------------------------------------------------

SMALL_LIMITS = FrameLimits(max_frames=8, max_frame_bytes=150_000, max_message_bytes=200_000)
# Largest buffer the reader may hand out: its staging buffer, a full header, or one frame.
MAX_BUFFER = max(STAGING_SIZE, 4 + 8 * SMALL_LIMITS.max_frames, SMALL_LIMITS.max_frame_bytes)

# Read sizes, cycled. Each cycle ends with one large read so that a stream of a few MB
# never takes millions of steps; tiny reads still land at every kind of position.
chunk_sizes = st.lists(
    st.one_of(st.integers(1, 16), st.integers(17, 70_000), st.integers(70_000, 300_000)),
    min_size=1,
    max_size=12,
).map(lambda sizes: [*sizes, 2**20])


def feed(
    reader: FrameReader,
    data: bytes,
    chunks: list[int],
    max_buffer: int,
    offered: dict[int, object] | None = None,
) -> list[list]:
    """Feed ``data`` the way asyncio's BufferedProtocol does; return completed messages.

    Each step asks for a buffer, copies at most ``len(buffer)`` bytes (and at most the
    next chunk size) into it and reports how many; chunk sizes cycle. ``offered``
    collects the objects behind the buffers the reader handed out.
    """
    messages: list[list] = []
    pos = step = 0
    while pos < len(data):
        buffer = reader.get_buffer()
        assert 0 < len(buffer) <= max_buffer, f"reader offered a buffer of {len(buffer)} bytes"
        if offered is not None:
            offered[id(buffer.obj)] = buffer.obj
        n = min(chunks[step % len(chunks)], len(buffer), len(data) - pos)
        buffer[:n] = data[pos : pos + n]
        pos += n
        step += 1
        messages.extend(reader.buffer_updated(n))
    return messages


def assert_within(limits: FrameLimits, message: list) -> None:
    assert 1 <= len(message) <= limits.max_frames
    sizes = [len(f) for f in message]
    assert max(sizes) <= limits.max_frame_bytes
    assert sum(sizes) <= limits.max_message_bytes
    assert all(type(f) in (bytes, bytearray) for f in message)


@st.composite
def header_like(draw) -> bytes:
    """Streams that look like frame headers, so fuzzing gets past the first four bytes."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        count = draw(st.one_of(st.integers(0, 10), st.integers(0, 2**32 - 1)))
        listed = min(count, 10)
        lengths = draw(
            st.lists(
                st.one_of(
                    st.integers(0, 100),
                    st.integers(DIRECT_READ_THRESHOLD - 4, 160_000),
                    st.integers(0, 2**64 - 1),
                ),
                min_size=listed,
                max_size=listed,
            )
        )
        body = draw(st.binary(max_size=200)) + bytes(draw(st.integers(0, 170_000)))
        parts.append(struct.pack(f"<I{listed}Q", count, *lengths) + body)
    return b"".join(parts)


@fuzz(300)
@given(data=st.one_of(st.binary(max_size=2000), header_like()), chunks=chunk_sizes)
@example(data=struct.pack("<IQ", 1, 2**62), chunks=[1])
@example(data=struct.pack("<I", 2**32 - 1) + bytes(20), chunks=[3])
@example(data=struct.pack("<IQQ", 2, 100_000, 100_001) + bytes(200_001), chunks=[70_000])
def test_frame_reader_survives_arbitrary_bytes(data, chunks):
    reader = FrameReader(SMALL_LIMITS)
    try:
        messages = feed(reader, data, chunks, MAX_BUFFER)
    except ProtocolError:
        return  # the stream is rejected: the caller drops the connection
    for message in messages:
        assert_within(SMALL_LIMITS, message)


def make_frame(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


frame_specs = st.tuples(
    st.one_of(
        st.integers(0, 300),
        st.integers(DIRECT_READ_THRESHOLD - 16, DIRECT_READ_THRESHOLD + 16),
        st.integers(0, 200_000),
    ),
    st.integers(0, 2**16),
)
message_specs = st.lists(st.lists(frame_specs, min_size=1, max_size=4), min_size=1, max_size=5)


@fuzz(150)
@given(specs=message_specs, chunks=chunk_sizes)
@example(  # large frames around the direct-read threshold, delivered in odd pieces
    specs=[
        [(DIRECT_READ_THRESHOLD, 1), (0, 2), (DIRECT_READ_THRESHOLD + 1, 3)],
        [(5, 4)],
        [(200_000, 5)],
    ],
    chunks=[7, 65_536, 1, 100_000],
)
def test_frame_reader_round_trips_valid_messages(specs, chunks):
    messages = [[make_frame(size, seed) for size, seed in spec] for spec in specs]
    stream = stream_of(messages)
    reader = FrameReader(DEFAULT_LIMITS)
    max_buffer = max(STAGING_SIZE, max(len(f) for m in messages for f in m))
    offered: dict[int, object] = {}
    received = feed(reader, stream, chunks, max_buffer, offered)
    assert [[bytes(f) for f in m] for m in received] == messages
    # Large frames were read straight into the buffer they are returned in (no copy).
    for frame in (f for m in received for f in m if len(f) >= DIRECT_READ_THRESHOLD):
        assert offered.get(id(frame)) is frame


def stream_of(messages: list[list[bytes]]) -> bytes:
    return b"".join(encode_header([len(f) for f in m]) + b"".join(m) for m in messages)


def boundaries(messages: list[list[bytes]]) -> list[int]:
    """Offsets in the stream where a header or a frame starts or ends."""
    points, pos = [0], 0
    for m in messages:
        pos += len(encode_header([len(f) for f in m]))
        points.append(pos)
        for f in m:
            pos += len(f)
            points.append(pos)
    return points


SMALL_MESSAGES = [[b"a" * 5], [b"", b"xyz"], [bytes(range(256))], [b"b"], [b"c" * 40] * 3]
WITH_LARGE_FRAME = [
    [b"head"],
    [b"x" * 10, make_frame(DIRECT_READ_THRESHOLD + 5, 1), b"tail"],
    [b"z"],
]


@pytest.mark.parametrize("messages", [SMALL_MESSAGES, WITH_LARGE_FRAME], ids=["small", "large"])
def test_frame_reader_every_split_point(messages):
    """The stream cut in two at every offset near a boundary (every offset, if small)."""
    stream = stream_of(messages)
    max_buffer = max(STAGING_SIZE, len(stream))
    if len(stream) < 2000:
        cuts = range(1, len(stream))
    else:
        cuts = sorted(
            {p + d for p in boundaries(messages) for d in range(-3, 4)} & set(range(1, len(stream)))
        )
    for cut in cuts:
        received = feed(FrameReader(DEFAULT_LIMITS), stream, [cut, len(stream)], max_buffer)
        assert [[bytes(f) for f in m] for m in received] == messages, f"cut at {cut}"


def test_frame_reader_byte_by_byte():
    stream = stream_of(SMALL_MESSAGES + WITH_LARGE_FRAME)
    received = feed(FrameReader(DEFAULT_LIMITS), stream, [1], max(STAGING_SIZE, len(stream)))
    assert [[bytes(f) for f in m] for m in received] == SMALL_MESSAGES + WITH_LARGE_FRAME


# -- the handshake -----------------------------------------------------------------------------

HANDSHAKE_ERRORS = (ProtocolError, HandshakeError)


def valid_hello() -> bytes:
    return handshake_frame(hello_body(auth=True, compression=["lz4"]))


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with a few bytes flipped, inserted, deleted, or cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "extend"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "extend":
            data += draw(st.binary(max_size=64))
    return bytes(data)


def check_decoded(body: object) -> None:
    assert isinstance(body, dict)
    for key, value in body.items():
        assert isinstance(key, str)
        items = value if isinstance(value, list) else [value]
        assert all(isinstance(v, str | bytes | int | bool | None) for v in items)


@fuzz(500)
@given(
    data=st.one_of(
        st.binary(max_size=5000),
        st.binary(max_size=300).map(lambda b: MAGIC + b"\x01\x00" + b),
        mutated(valid_hello()),
    )
)
@example(data=MAGIC)
@example(data=MAGIC + b"\x01\x00" + b"\xc1")
@example(data=MAGIC + b"\x01\x00" + msgpack.packb({"nonce": msgpack.ExtType(EXT_PICKLE, b"")}))
def test_handshake_decode_only_raises_protocol_errors(data):
    try:
        body = decode([data])
    except HANDSHAKE_ERRORS:
        return
    check_decoded(body)


@fuzz(100)
@given(frames=st.lists(st.binary(max_size=100), max_size=6))
def test_handshake_decode_wants_exactly_one_frame(frames):
    if len(frames) == 1:
        return
    with pytest.raises(HANDSHAKE_ERRORS):
        decode(frames)


class ScriptedComm(Comm):
    """A comm whose peer is a list of messages: reads pop them, writes are recorded."""

    peer_address = "scripted://peer"
    local_address = "scripted://local"

    def __init__(self, incoming: list[list[bytes]]) -> None:
        super().__init__(PRE_AUTH_LIMITS)
        self.incoming = list(incoming)
        self.sent: list[list[bytes]] = []
        self._closed = False

    async def read_frames(self) -> list[bytes]:
        if self._closed or not self.incoming:
            raise CommClosedError("script ended")
        return self.incoming.pop(0)

    async def write_frames(self, frames) -> None:
        if self._closed:
            raise CommClosedError("closed")
        self.sent.append(list(frames))

    async def close(self) -> None:
        self._closed = True

    def abort(self) -> None:
        self._closed = True

    def closed(self) -> bool:
        return self._closed


# What can reach the handshake logic: flat msgpack maps of scalars and lists of scalars.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=12),
    st.binary(max_size=40),
    st.binary(min_size=32, max_size=32),
)
field_values = st.one_of(scalars, st.lists(scalars, max_size=4))
field_names = st.one_of(
    st.sampled_from(["role", "name", "nonce", "compression", "auth", "proof", "error", "ok"]),
    st.text(max_size=8),
)
bodies = st.dictionaries(field_names, field_values, max_size=8)


def with_valid_nonce(body: dict) -> dict:
    return {**body, "nonce": secrets.token_bytes(32)}


def run_handshake(side, comm: ScriptedComm, options: ConnectionOptions) -> None:
    try:
        asyncio.run(side(comm, options))
    except HANDSHAKE_ERRORS:
        pass


SERVER_OPTIONS = [
    ConnectionOptions(role="server"),
    ConnectionOptions(role="server", compression="lz4"),
    ConnectionOptions(role="server", security=Security(token="fuzz-token")),
]


@fuzz(200)
@given(
    hello=st.one_of(bodies, bodies.map(with_valid_nonce)),
    reply=bodies,
    options=st.sampled_from(SERVER_OPTIONS),
)
@example(hello=with_valid_nonce({"compression": 1}), reply={}, options=SERVER_OPTIONS[0])
def test_server_handshake_rejects_odd_fields_with_protocol_errors(hello, reply, options):
    """Any hello that passes ``decode`` must be accepted or refused, never crash the server."""
    comm = ScriptedComm([encode(hello), encode(reply)])
    run_handshake(server_handshake, comm, options)


CLIENT_OPTIONS = [
    ConnectionOptions(),
    ConnectionOptions(compression="lz4"),
    ConnectionOptions(security=Security(token="fuzz-token")),
]


@fuzz(200)
@given(
    welcome=st.one_of(bodies, bodies.map(with_valid_nonce)),
    verdict=bodies,
    options=st.sampled_from(CLIENT_OPTIONS),
)
def test_client_handshake_rejects_odd_fields_with_protocol_errors(welcome, verdict, options):
    comm = ScriptedComm([encode(welcome), encode(verdict)])
    run_handshake(client_handshake, comm, options)


# -- the message codec -------------------------------------------------------------------------

EXT_CODES = [EXT_TUPLE, EXT_SET, EXT_FROZENSET, EXT_PICKLE, EXT_FRAME, 0, 6, 127]


def _ext_packed(children):
    """msgpack values that may hold corral's extension types, nested and malformed."""
    code = st.sampled_from(EXT_CODES)
    payload = st.one_of(
        st.binary(max_size=20),
        children.map(lambda v: msgpack.packb(v, default=_pack_default)),
        st.tuples(st.integers(-1, 8), st.integers(-1, 8), st.sampled_from([None, "lz4", "x", 3]))
        .map(list)
        .map(msgpack.packb),
    )
    return st.builds(msgpack.ExtType, code, payload)


def _pack_default(obj):
    raise TypeError(f"cannot pack {type(obj)}")


msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
        _ext_packed(children),
    ),
    max_leaves=12,
)


@st.composite
def codec_frames(draw) -> list[bytes]:
    head = msgpack.packb(draw(msgpack_values), default=_pack_default)
    rest = draw(st.lists(st.binary(max_size=200), max_size=4))
    return [head, *rest]


@fuzz(500)
@given(
    frames=st.one_of(
        st.lists(st.binary(max_size=300), max_size=5),
        codec_frames(),
    )
)
@example(frames=[])
@example(frames=[b"\x91" * 5000])
@example(frames=[b"\xd4\xff\x00"])  # msgpack's own extension -1 (timestamp), malformed
@example(frames=[*MessageCodec().encode({"a": (1, {2}, frozenset([3]))}), b"extra"])
def test_codec_without_pickle_only_raises_deserialization_error(frames):
    try:
        MessageCodec(allow_pickle=False).decode(frames)
    except DeserializationError:
        pass
