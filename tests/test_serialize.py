"""Round trips of arbitrary objects through the codec and over every transport."""

from __future__ import annotations

import dataclasses
import functools
import pickle
import threading

import msgpack
import numpy as np
import pytest

from corral.comm import FrameLimits
from corral.core import Server, connect, rpc
from corral.exceptions import DeserializationError
from corral.protocol import MessageCodec, dumps_pickle, loads_pickle
from corral.protocol.serialize import EXT_PICKLE, EXT_TUPLE, MAX_EXT_DEPTH


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


# -- depth -----------------------------------------------------------------------------


def _nested_tuple(depth: int, leaf: object = 0) -> object:
    value = leaf
    for _ in range(depth):
        value = (value,)
    return value


def _wrapped_ext(depth: int) -> msgpack.ExtType:
    """``depth`` tuple extension types, each holding the next (what a hostile peer sends)."""
    ext = msgpack.ExtType(EXT_TUPLE, msgpack.packb([0]))
    for _ in range(depth - 1):
        ext = msgpack.ExtType(EXT_TUPLE, msgpack.packb([ext]))
    return ext


@pytest.mark.parametrize("extra_frames", [0, 1], ids=["one-frame", "many-frames"])
def test_extension_types_nested_past_the_bound_are_refused(extra_frames):
    codec = MessageCodec()
    frames = [msgpack.packb({"op": "identity", "x": _wrapped_ext(MAX_EXT_DEPTH)})]
    frames += [b"spare"] * extra_frames
    assert codec.decode(frames)["x"] == _nested_tuple(MAX_EXT_DEPTH)
    frames[0] = msgpack.packb({"op": "identity", "x": _wrapped_ext(MAX_EXT_DEPTH + 1)})
    with pytest.raises(DeserializationError, match=f"more than {MAX_EXT_DEPTH} levels deep"):
        codec.decode(frames)


@pytest.mark.parametrize(
    "value",
    [
        _nested_tuple(800),
        {"deep": _nested_tuple(MAX_EXT_DEPTH * 3, leaf=frozenset({1}))},
        [_nested_tuple(MAX_EXT_DEPTH + 1, leaf={np.float64(1.5)})],
        functools.reduce(lambda v, _: [v], range(400), 0),
        functools.reduce(lambda v, i: [i, ({"k": v},)], range(120), 0),
    ],
    ids=["tuple-800", "frozenset-leaf", "set-leaf", "list-400", "mixed-120"],
)
def test_deep_values_pickle_handles_travel_intact(value):
    assert pickle.loads(dumps_pickle(value)) == value  # pickle (or cloudpickle) copes
    codec = MessageCodec()
    assert _same(codec.decode(codec.encode(value)), value)


def test_a_value_too_deep_for_pickle_fails_to_encode_with_an_exception():
    codec = MessageCodec()
    with pytest.raises((RecursionError, pickle.PicklingError)):
        codec.encode(_nested_tuple(100_000))
    assert codec.decode(codec.encode((1, 2))) == (1, 2)  # the encoder is still usable


def test_a_deeply_nested_pickle_decodes_without_crashing():
    # Unpickling is iterative: a 100 000-deep list arrives whole, and the codec can
    # neither crash nor recurse on it afterwards.
    depth = 100_000
    payload = b"\x80\x05" + b"]" * depth + b"a" * (depth - 1) + b"."
    frames = [msgpack.packb(msgpack.ExtType(EXT_PICKLE, msgpack.packb([[1, None]]))), payload]
    value = MessageCodec().decode(frames)
    for _ in range(depth - 1):
        (value,) = value
    assert value == []


# -- writable arrays -------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "lz4"])
@pytest.mark.parametrize("size", [10, 100_000], ids=["small", "large"])
def test_arrays_decode_writable(compression, size):
    codec = MessageCodec(compression_name=compression)
    array = np.zeros(size, dtype="u1")  # compressible: lz4 really compresses the large one
    # Frames as a socket delivers them: small ones as immutable bytes.
    frames = [bytes(f) for f in codec.encode({"a": array})]
    result = codec.decode(frames)["a"]
    assert result.flags.writeable
    result[0] = 7
    np.testing.assert_array_equal(result[1:], array[1:])


async def test_small_arrays_arrive_writable_over_every_transport(server):
    async with rpc(server.address) as r:
        result = await r.echo(data={"small": np.arange(10), "large": np.arange(100_000)})
    for array in result.values():
        assert array.flags.writeable
        array[0] = -1


# -- splitting large buffers -----------------------------------------------------------

SPLIT = 4096


@pytest.mark.parametrize("compression", [None, "lz4"])
@pytest.mark.parametrize(
    "value",
    [
        np.arange(10_000, dtype="u2"),  # one out-of-band buffer, 5 pieces
        bytes(range(256)) * 300,  # a frame of its own (EXT_FRAME), split
        bytearray(b"x" * 70_000),
        ["a string" * 20] * 200,  # msgpack, too large for frame 0: pickled whole
        [Point(i, -i) for i in range(1000)],  # an in-band pickle payload over the limit
        {"many": [np.full(SPLIT + 1, i, dtype="u1") for i in range(3)], "t": (1, 2)},
    ],
    ids=["array", "bytes", "bytearray", "msgpack", "pickle-payload", "several"],
)
def test_buffers_over_the_frame_limit_are_split_and_joined(value, compression):
    codec = MessageCodec(compression_name=compression, max_frame_bytes=SPLIT)
    frames = codec.encode(value)
    assert max(memoryview(f).nbytes for f in frames) <= SPLIT
    result = codec.decode([bytes(f) for f in frames])
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(result, value)
        assert result.flags.writeable
    elif isinstance(value, dict):
        for got, want in zip(result["many"], value["many"], strict=True):
            np.testing.assert_array_equal(got, want)
        assert result["t"] == (1, 2)
    else:
        assert _same(result, value)


def test_malformed_split_references_are_refused():
    codec = MessageCodec(max_frame_bytes=SPLIT)
    frames = codec.encode(np.arange(3 * SPLIT, dtype="u1"))
    assert len(frames) == 5  # frame 0, the pickle payload, three pieces
    head = msgpack.packb(msgpack.ExtType(EXT_PICKLE, msgpack.packb([[1, None, 2]])))
    with pytest.raises(DeserializationError, match="malformed frame reference"):
        codec.decode([head, *frames[1:]])
    head = msgpack.packb(msgpack.ExtType(EXT_PICKLE, msgpack.packb([[1, None, 1, None]])))
    with pytest.raises(DeserializationError, match="missing frame"):
        codec.decode([head, frames[1]])  # refers to one frame twice


@pytest.mark.parametrize("transport", ["tcp://127.0.0.1:0", "inproc://"])
async def test_values_over_the_frame_limit_travel_between_peers(transport):
    limits = FrameLimits(max_frame_bytes=SPLIT)
    async with Server({"echo": lambda comm, data: data}, limits=limits) as server:
        await server.listen(transport)
        comm = await connect(server.address, limits=limits)
        array = np.arange(200_000, dtype="f8")
        await comm.write({"op": "echo", "data": [array, b"y" * 100_000]})
        got, blob = await comm.read()
        await comm.close()
    np.testing.assert_array_equal(got, array)
    assert got.flags.writeable
    assert blob == b"y" * 100_000


@pytest.mark.parametrize("level", [b"\x91", b"\x81\x00"], ids=["lists", "maps"])
def test_plain_containers_nested_past_msgpack_limit_are_refused(level):
    with pytest.raises(DeserializationError, match="cannot decode"):
        MessageCodec().decode([level * 100_000 + b"\xc0"])


# -- unpickling, one thread at a time ------------------------------------------------------

_HOLDING, _RELEASE = threading.Event(), threading.Event()
_ORDER: list[str] = []


def _rebuilt_slowly() -> str:
    """Stands for an unpickle that imports a slow module (numpy in a fresh worker)."""
    _HOLDING.set()
    _RELEASE.wait(30)
    _ORDER.append("slow")
    return "slow"


def _rebuilt_at_once() -> str:
    _ORDER.append("quick")
    return "quick"


class _Rebuild:
    def __init__(self, how):
        self.how = how

    def __reduce__(self):
        return (self.how, ())


def test_unpickling_is_one_thread_at_a_time():
    """Two threads importing numpy and its submodules at once through unpickling (a task
    thread's function, the loop thread's array) got "partially initialized module"
    errors in fresh workers: no unpickle may start while another one runs."""
    slow, quick = pickle.dumps(_Rebuild(_rebuilt_slowly)), pickle.dumps(_Rebuild(_rebuilt_at_once))
    first = threading.Thread(target=loads_pickle, args=(slow,))
    second = threading.Thread(target=loads_pickle, args=(quick,))
    first.start()
    try:
        assert _HOLDING.wait(30)
        second.start()
        second.join(0.2)
        assert second.is_alive(), "an unpickle ran while another was under way"
    finally:
        _RELEASE.set()
        first.join(30)
        if second.is_alive() or second.ident is not None:
            second.join(30)
    assert _ORDER == ["slow", "quick"]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_copy_gives_what_a_round_trip_would_or_asks_for_one(name):
    """``MessageCodec.copy``, for a peer in this process: the decoded value, with its
    types, in containers of its own; or ``MUST_ENCODE`` for what only pickling carries."""
    from corral.comm.base import MUST_ENCODE

    codec = MessageCodec()
    value = SAMPLES[name]
    copied = codec.copy(value)
    if name == "custom":
        assert copied is MUST_ENCODE
        return
    assert copied == codec.decode(codec.encode(value))
    assert type(copied) is type(value)
    if isinstance(value, dict | list | set | bytearray):
        assert copied is not value
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(copied[k]) is type(v)


def test_copy_refuses_what_the_codec_would_pickle_deep_down():
    from corral.comm.base import MUST_ENCODE

    codec = MessageCodec()
    deep: list = []
    for _ in range(MAX_EXT_DEPTH + 2):
        deep = [deep]
    assert codec.copy(deep) is MUST_ENCODE
    assert codec.copy({"fine": [1, {"inner": (Point(1, 2),)}]}) is MUST_ENCODE
