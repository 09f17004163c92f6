"""Round trips of arbitrary objects through the codec and over every transport."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from corral.core import connect, rpc
from corral.exceptions import DeserializationError
from corral.protocol import MessageCodec


@dataclasses.dataclass
class Point:
    x: int
    y: int


def _make_closure(n):
    return lambda x: x + n


SAMPLES = {
    "dict": {"a": 1, "b": [1, 2.5, None, True], "c": {"d": "é"}},
    "tuple": (1, (2, 3), [4, (5,)]),
    "set": {1, 2, 3},
    "frozenset": frozenset({"a", "b"}),
    "int-keys": {1: "one", (2, 3): "tuple key"},
    "custom": Point(1, 2),
    "big-int": 2**100,
    "surrogate": "a\udc80b",
    "small-bytes": b"\x00\x01",
    "bytearray": bytearray(b"abc"),
    "nested-big-bytes": {"blob": b"x" * 200_000, "meta": (1, b"y" * 70_000)},
}


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("compression", [None, "lz4"])
def test_codec_round_trip_keeps_values_and_types(name, compression):
    codec = MessageCodec(compression_name=compression)
    value = SAMPLES[name]
    result = codec.decode(codec.encode(value))
    assert _same(result, value)
    if isinstance(value, dict):
        for k in value:
            assert type(result[k]) is type(value[k])


def test_functions_and_closures_travel_by_value():
    codec = MessageCodec()
    add_three = codec.decode(codec.encode(_make_closure(3)))
    assert add_three(4) == 7
    square = codec.decode(codec.encode(lambda x: x * x))
    assert square(5) == 25


def test_numpy_array_travels_out_of_band_without_copy():
    codec = MessageCodec()
    array = np.arange(1_000_000, dtype="f8")
    frames = codec.encode({"data": array})
    # The array's memory is a frame of its own, handed over as a view, not copied.
    assert any(
        isinstance(f, memoryview) and np.shares_memory(np.asarray(f), array) for f in frames
    )
    result = codec.decode(frames)["data"]
    np.testing.assert_array_equal(result, array)


def test_large_compressible_frames_are_compressed_and_random_ones_are_not():
    codec = MessageCodec(compression_name="lz4")
    zeros = np.zeros(1_000_000, dtype="u1")
    frames = codec.encode(zeros)
    assert sum(memoryview(f).nbytes for f in frames) < 100_000
    np.testing.assert_array_equal(codec.decode(frames), zeros)
    noise = np.random.default_rng(0).integers(0, 256, 1_000_000, dtype="u1")
    frames = codec.encode(noise)
    assert sum(memoryview(f).nbytes for f in frames) > 1_000_000


def test_pickles_are_refused_without_permission(tmp_path):
    marker = tmp_path / "unpickled"
    frames = MessageCodec().encode(_FileMaker(str(marker)))
    with pytest.raises(DeserializationError, match="unauthenticated"):
        MessageCodec(allow_pickle=False).decode(frames)
    assert not marker.exists()
    # Plain msgpack data still decodes without permission to unpickle.
    assert MessageCodec(allow_pickle=False).decode(MessageCodec().encode({"a": (1, 2)})) == {
        "a": (1, 2)
    }


class _FileMaker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


OBJECTS = [
    {1, 2},
    (1, "two", (3,)),
    Point(3, 4),
    b"z" * (20 * 1024 * 1024),
    np.arange(2_000_000, dtype="i4"),
    {"arrays": [np.ones(10), np.zeros((3, 4))]},
]


@pytest.mark.parametrize("value", OBJECTS, ids=lambda v: type(v).__name__)
async def test_round_trip_over_the_wire(server, value):
    async with rpc(server.address) as r:
        result = await r.echo(data=value)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(result, value)
    elif isinstance(value, dict):
        for got, want in zip(result["arrays"], value["arrays"], strict=True):
            np.testing.assert_array_equal(got, want)
    else:
        assert _same(result, value)


async def test_lambda_round_trip_over_the_wire(server):
    async with rpc(server.address) as r:
        fn = await r.echo(data=lambda x: x * 10)
    assert fn(4) == 40


async def test_received_array_lives_in_the_frame_buffer(tcp_server):
    # Over TCP a large frame is read straight into its own buffer and the array is
    # built on top of it: writable, and owned by that buffer rather than a copy.
    comm = await connect(tcp_server.address)
    array = np.arange(5_000_000, dtype="u1")
    await comm.write({"op": "echo", "data": array})
    result = await comm.read()
    await comm.close()
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable
    owner = result
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    assert isinstance(owner.base, bytearray | memoryview)  # a copy would own its memory
