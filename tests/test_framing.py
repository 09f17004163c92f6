"""The sans-I/O frame reader on byte buffers, no sockets."""

from __future__ import annotations

import struct

import pytest

from corral.comm.framing import (
    DIRECT_READ_THRESHOLD,
    FrameLimits,
    FrameReader,
    encode_header,
)
from corral.exceptions import FrameLimitError


def encode(frames: list[bytes]) -> bytes:
    return encode_header([len(f) for f in frames]) + b"".join(frames)


def feed(reader: FrameReader, data: bytes, chunk: int | None = None) -> list:
    messages = []
    view = memoryview(data)
    while view:
        buf = reader.get_buffer()
        n = min(len(buf), len(view), chunk or len(view))
        buf[:n] = view[:n]
        view = view[n:]
        messages.extend(reader.buffer_updated(n))
    return messages


def test_many_small_messages_in_one_read():
    data = b"".join(encode([f"m{i}".encode()]) for i in range(100))
    messages = feed(FrameReader(FrameLimits()), data)
    assert [m[0] for m in messages] == [f"m{i}".encode() for i in range(100)]


@pytest.mark.parametrize("chunk", [1, 7, 4096, None])
def test_messages_split_at_any_point(chunk):
    frames = [b"head", b"x" * (3 * DIRECT_READ_THRESHOLD + 5), b"", b"tail" * 1000]
    data = encode(frames) * 3
    messages = feed(FrameReader(FrameLimits()), data, chunk)
    assert messages == [frames] * 3


def test_large_frame_is_read_into_its_own_buffer():
    reader = FrameReader(FrameLimits())
    big = bytes(range(256)) * 4096  # 1 MiB
    data = encode([big])
    feed(reader, data[:100_000])
    target = reader.get_buffer()
    # The reader now hands out the tail of the frame's own buffer, sized to what is left.
    assert len(target) == len(data) - 100_000
    messages = feed(reader, data[100_000:])
    assert messages == [[big]]
    assert isinstance(messages[0][0], bytearray)


def test_header_with_many_frames_larger_than_the_staging_buffer():
    frames = [bytes([i % 256]) for i in range(20_000)]
    assert feed(FrameReader(FrameLimits()), encode(frames), chunk=50_000) == [frames]


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (struct.pack("<I", 0), "0 frames"),
        (struct.pack("<I", 2**32 - 1), "frames"),
        (struct.pack("<IQ", 1, 2**62), "exceeds the limit"),
        (struct.pack("<IQQ", 2, 2**30, 2**30), "message of"),
    ],
)
def test_limits_are_checked_before_allocating(header, match):
    limits = FrameLimits(max_frames=10, max_frame_bytes=2**30, max_message_bytes=2**30)
    with pytest.raises(FrameLimitError, match=match):
        feed(FrameReader(limits), header)


def test_limits_can_be_raised_after_authentication():
    reader = FrameReader(FrameLimits(max_frames=1, max_frame_bytes=10, max_message_bytes=10))
    assert feed(reader, encode([b"small"])) == [[b"small"]]
    reader.limits = FrameLimits()
    assert feed(reader, encode([b"a" * 100, b"b"])) == [[b"a" * 100, b"b"]]
