"""Messages to frames and back.

Frame 0 is msgpack. Values msgpack cannot carry become msgpack extension types:

* tuples, sets and frozensets keep their type (their items packed recursively);
* large ``bytes``/``bytearray``/``memoryview`` travel as frames of their own;
* anything else is pickled (protocol 5; cloudpickle for functions defined in
  ``__main__``, lambdas and closures), its out-of-band buffers — e.g. NumPy arrays —
  travelling as their own frames and coming back without a copy.

Decoding a pickle is refused unless the codec was built with ``allow_pickle=True``:
the handshake only does that once the peer has authenticated.

Depth. msgpack decodes each extension type in a nested call that takes ~40 KiB of C
stack, so a message nesting a few hundred of them would crash the process. The
decoder refuses extension types nested deeper than ``MAX_EXT_DEPTH``; the encoder
never produces such nesting: deeper tuples and sets are pickled whole (pickle's own
depth limit is Python's recursion limit, and it fails with an exception, not a crash).

Size. A buffer larger than the codec's ``max_frame_bytes`` travels as several frames
(a reference then lists them all) and is joined into one writable buffer on receipt:
one copy, and only for such buffers. Buffers that pickle rebuilds objects on (NumPy
arrays, ...) are always writable: a read-only frame (small frames arrive as ``bytes``)
is copied, a large one is used in place.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

import cloudpickle
import msgpack

from corral.comm.base import MUST_ENCODE
from corral.comm.framing import FrameLimits, allocate_frame, frame_nbytes
from corral.exceptions import DeserializationError
from corral.protocol import by_name, compression

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_PICKLE = 4  # [payload ref, buffer ref, ...]; a ref is [frame index, compression] * pieces
EXT_FRAME = 5  # [kind, frame index, compression, (frame index, compression)...]

MAX_EXT_DEPTH = 16  # extension types nested deeper than this are refused when decoding
DEFAULT_MAX_FRAME_BYTES = FrameLimits().max_frame_bytes  # larger buffers are split

INLINE_BYTES_LIMIT = 64 * 1024  # larger binary values become frames of their own
_BYTES_KINDS: dict[type[Any], int] = {bytes: 0, bytearray: 1, memoryview: 2}


# Unpickling imports the modules that objects name. When two threads import a package
# and one of its submodules at the same time, in different orders (a task thread
# unpickling a function whose module imports numpy, the loop thread unpickling an array,
# which imports ``numpy._core.multiarray`` first), CPython breaks the would-be deadlock
# by handing one of them the partially initialized module: "cannot import name ... from
# partially initialized module", in fresh workers. So unpickling is one thread at a time.
_UNPICKLING = threading.RLock()


def loads_pickle(data: Any, buffers: Any = ()) -> Any:
    """``pickle.loads``, one thread at a time per process (see ``_UNPICKLING``)."""
    with _UNPICKLING:
        return pickle.loads(data, buffers=buffers)


def dumps_pickle(obj: Any, buffer_callback: Any = None) -> bytes:
    """Pickle with protocol 5, by value where the receiver could not import by reference.
    h5py files and datasets travel by name (``by_name``)."""
    by_name.register_if_loaded()
    try:
        result = pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)
        if b"__main__" not in result:
            return result
    except Exception:
        pass
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)


class _Binary:
    """A binary value that travels as a frame of its own instead of inside msgpack."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        self.value = value


_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})


def _hoist_binary(obj: Any, depth: int = 0) -> Any:
    """Wrap large (or mutable) binary values in containers as ``_Binary``.

    msgpack would copy them into frame 0; as frames of their own they are written
    and read in place. Containers are copied only where something was wrapped; past
    ``MAX_EXT_DEPTH`` levels they are left alone (such a value is pickled anyway).
    Scalars and small ``bytes`` inside containers are passed over without a call: this
    walk runs for every message.
    """
    kind = type(obj)
    if kind in _SCALARS or depth > MAX_EXT_DEPTH:
        return obj
    if kind is dict or kind is list or kind is tuple:
        copy: Any = None  # made only once something inside is wrapped
        for slot, value in (obj.items() if kind is dict else enumerate(obj)):
            vkind = type(value)
            if vkind in _SCALARS or (vkind is bytes and len(value) <= INLINE_BYTES_LIMIT) or (
                    vkind in _CONTAINERS and not value):
                continue
            hoisted = _hoist_binary(value, depth + 1)
            if hoisted is not value:
                if copy is None:
                    copy = dict(obj) if kind is dict else list(obj)
                copy[slot] = hoisted
        if copy is None:
            return obj
        return tuple(copy) if kind is tuple else copy
    if kind is bytes:
        return _Binary(obj) if len(obj) > INLINE_BYTES_LIMIT else obj
    if kind is bytearray or kind is memoryview:
        return _Binary(obj)
    return obj


_CONTAINER_EXTS: dict[type[Any], int] = {tuple: EXT_TUPLE, set: EXT_SET, frozenset: EXT_FROZENSET}
_EMPTY_TUPLE = msgpack.ExtType(EXT_TUPLE, msgpack.packb([]))  # the commonest: no dependencies


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    """``msgpack.ExtType(code, data)`` without its argument checks (a third of the time):
    ``code`` is one of ours and ``data`` bytes from a packer."""
    return tuple.__new__(msgpack.ExtType, (code, data))


class _Encoder:
    """Packs one message at a time; reused, so its msgpack ``Packer`` is built once."""

    def __init__(self, compression_name: str | None, max_frame_bytes: int) -> None:
        self.frames: list[Any] = []
        self.compression = compression_name
        self.max_frame_bytes = max_frame_bytes
        self._depth = 0  # extension types enclosing what is being packed
        self._packer = self._new_packer()
        self._packers = [self._packer]  # one per depth: nested values are packed apart

    def _new_packer(self) -> msgpack.Packer:
        return msgpack.Packer(default=self.default, strict_types=True, use_bin_type=True)

    def encode(self, msg: Any) -> list[Any]:
        self.frames = frames = [b""]
        try:
            frames[0] = self._packer.pack(_hoist_binary(msg))
            if len(frames[0]) > self.max_frame_bytes:  # frame 0 cannot be split: pickle it
                raise ValueError("message too large for one frame")
        except (OverflowError, ValueError, UnicodeEncodeError, TypeError, RecursionError,
                pickle.PicklingError):
            # Values msgpack refuses outright (huge ints, lone surrogates, lists nested
            # past its recursion limit), too much of them, or a subtree too deep to
            # pickle from down here: pickle it all, from the top of the stack.
            self.frames = frames = [b""]
            frames[0] = msgpack.packb(self.pickle(msg))
        finally:
            self.frames = []
            self._depth = 0
        return frames

    def add_frame(self, buf: Any) -> list[Any]:
        """Append ``buf`` as frames of at most ``max_frame_bytes``; its reference."""
        view = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
        step = self.max_frame_bytes
        pieces = [view] if len(view) <= step else [
            view[i : i + step] for i in range(0, len(view), step)
        ]
        ref: list[Any] = []
        for piece in pieces:
            codec, data = compression.maybe_compress(self.compression, piece)
            self.frames.append(data)
            ref += [len(self.frames) - 1, codec]
        return ref

    def pack(self, obj: Any) -> bytes:
        """Pack a nested value with the packer of its depth (those above are busy with
        the values that enclose it)."""
        self._depth += 1
        try:
            packers = self._packers
            if self._depth == len(packers):
                packers.append(self._new_packer())
            return packers[self._depth].pack(obj)
        finally:
            self._depth -= 1

    def default(self, obj: Any) -> msgpack.ExtType:
        kind = type(obj)
        code = _CONTAINER_EXTS.get(kind)
        if code is not None:
            if self._depth + 1 >= MAX_EXT_DEPTH:  # its items would nest too deep
                return self.pickle(obj)
            if not obj and kind is tuple:
                return _EMPTY_TUPLE
            return _ext(code, self.pack(list(obj)))
        if kind is _Binary:
            value = obj.value
            view = memoryview(value)
            frame = view.cast("B") if view.contiguous else view.tobytes()
            ref = self.add_frame(frame)
            return _ext(EXT_FRAME, self.pack([_BYTES_KINDS[type(value)], *ref]))
        return self.pickle(obj)

    def pickle(self, obj: Any) -> msgpack.ExtType:
        buffers: list[pickle.PickleBuffer] = []
        payload = dumps_pickle(obj, buffer_callback=buffers.append)
        refs = [self.add_frame(payload)]
        refs.extend(self.add_frame(b.raw()) for b in buffers)
        return _ext(EXT_PICKLE, self.pack(refs))


_SHARED = _SCALARS | {bytes}  # immutable: handed as they are


class _NotPlain(Exception):
    pass


def _plain_copy(obj: Any, depth: int) -> Any:
    kind = type(obj)
    if kind in _SHARED:
        return obj
    if depth >= MAX_EXT_DEPTH:
        raise _NotPlain
    depth += 1
    if kind is dict:
        return {_plain_copy(k, depth): _plain_copy(v, depth) for k, v in obj.items()}
    if kind is list:
        return [_plain_copy(v, depth) for v in obj]
    if kind is tuple:
        return tuple([_plain_copy(v, depth) for v in obj])
    if kind is set or kind is frozenset:
        return kind(_plain_copy(v, depth) for v in obj)
    if kind is bytearray or kind is memoryview:
        return bytearray(obj)  # the receiver's own, writable, as off a socket
    raise _NotPlain


class MessageCodec:
    """The codec corral installs on a comm after the handshake.

    ``max_frame_bytes`` bounds every frame it writes (larger buffers are split) and
    what a compressed frame it reads may decompress to.
    """

    def __init__(
        self,
        allow_pickle: bool = True,
        compression_name: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be at least 1")
        self.allow_pickle = allow_pickle
        self.compression = compression.check_name(compression_name)
        self.max_frame_bytes = max_frame_bytes
        self._encoder = _Encoder(self.compression, max_frame_bytes)

    def encode(self, msg: Any) -> list[Any]:
        return self._encoder.encode(msg)

    def copy(self, msg: Any) -> Any:
        """What ``decode(encode(msg))`` would give, made without encoding, for a peer in
        this process: containers rebuilt, immutable values shared, mutable buffers
        copied. ``MUST_ENCODE`` when only encoding can tell: a value of another type
        (encoding pickles it), or nesting deeper than the extension types allow."""
        try:
            return _plain_copy(msg, 0)
        except _NotPlain:
            return MUST_ENCODE

    def decode(self, frames: list[Any]) -> Any:
        """The message in ``frames``; frames of split buffers are released (set to None)."""
        try:
            if len(frames) == 1:  # no frames to refer to: containers only
                return msgpack.unpackb(
                    frames[0], ext_hook=_single_frame_ext_hook, strict_map_key=False
                )
            return _Decoder(frames, self).unpack(frames[0])
        except DeserializationError:
            raise
        except Exception as e:  # RecursionError and MemoryError included
            raise DeserializationError(f"cannot decode message: {type(e).__name__}: {e}") from e


_NO_PICKLE = MessageCodec(allow_pickle=False)


def _container_hook(depth: int, inner: Any) -> Any:
    """The ``ext_hook`` of a message of one frame for an extension type inside ``depth``
    others: containers only (nothing to refer to), their own items decoded by ``inner``.
    Stateless, so built once for each depth and shared by all threads."""

    def hook(code: int, data: bytes) -> Any:
        if depth >= MAX_EXT_DEPTH:
            raise DeserializationError(
                f"message nests extension types more than {MAX_EXT_DEPTH} levels deep")
        if code == EXT_TUPLE:
            return tuple(msgpack.unpackb(data, ext_hook=inner, strict_map_key=False))
        if code == EXT_SET:
            return set(msgpack.unpackb(data, ext_hook=inner, strict_map_key=False))
        if code == EXT_FROZENSET:
            return frozenset(msgpack.unpackb(data, ext_hook=inner, strict_map_key=False))
        if depth == 0:
            raise DeserializationError(
                f"extension type {code} refers to a frame the message lacks")
        decoder = _Decoder([data], _NO_PICKLE)  # its refusal, as for any other message
        decoder.depth = depth
        return decoder.ext_hook(code, data)

    return hook


def _single_frame_hooks() -> Any:
    hook = _container_hook(MAX_EXT_DEPTH, None)
    for depth in range(MAX_EXT_DEPTH - 1, -1, -1):
        hook = _container_hook(depth, hook)
    return hook


_single_frame_ext_hook = _single_frame_hooks()


class _Decoder:
    def __init__(self, frames: list[Any], codec: MessageCodec) -> None:
        self.frames = frames
        self.allow_pickle = codec.allow_pickle
        self.compression = codec.compression
        self.max_frame_bytes = codec.max_frame_bytes
        self.depth = 0  # extension types being decoded, one inside the other

    def unpack(self, data: Any) -> Any:
        return msgpack.unpackb(data, ext_hook=self.ext_hook, strict_map_key=False, raw=False)

    def _raw(self, index: int, codec: str | None) -> Any:
        if not 0 < index < len(self.frames) or self.frames[index] is None:
            raise DeserializationError(f"message refers to missing frame {index}")
        if codec is not None and codec != self.compression:
            raise DeserializationError(f"frame compressed with {codec!r}, which was not agreed")
        return self.frames[index]

    def _size(self, index: int, codec: str | None) -> int:
        """The size of a frame once decompressed, checked before decompressing it."""
        data = self._raw(index, codec)
        if codec is None:
            return frame_nbytes(data)
        size = compression.decompressed_size(codec, data)
        if size > self.max_frame_bytes:
            raise DeserializationError("compressed frame would exceed the frame size limit")
        return size

    def frame(self, index: int, codec: str | None) -> Any:
        if codec is None:
            return self._raw(index, codec)
        self._size(index, codec)
        return compression.decompress(codec, self.frames[index])

    def buffer(self, ref: list[Any]) -> Any:
        """The buffer a reference names: one frame, or split frames joined (one copy)."""
        if len(ref) == 2:
            return self.frame(*ref)
        if len(ref) < 2 or len(ref) % 2:
            raise DeserializationError(f"malformed frame reference {ref[:6]!r}")
        pairs = list(zip(ref[::2], ref[1::2], strict=True))
        sizes = [self._size(i, c) for i, c in pairs]
        joined = allocate_frame(sum(sizes))
        view = memoryview(joined)
        start = 0
        for (index, codec), size in zip(pairs, sizes, strict=True):
            view[start : start + size] = memoryview(self.frame(index, codec)).cast("B")
            start += size
            self.frames[index] = None  # release each piece as soon as it is copied
        return joined

    def ext_hook(self, code: int, data: bytes) -> Any:
        if self.depth >= MAX_EXT_DEPTH:
            raise DeserializationError(
                f"message nests extension types more than {MAX_EXT_DEPTH} levels deep"
            )
        self.depth += 1
        try:
            return self._ext(code, data)
        finally:
            self.depth -= 1

    def _ext(self, code: int, data: bytes) -> Any:
        if code == EXT_TUPLE:
            return tuple(self.unpack(data))
        if code == EXT_SET:
            return set(self.unpack(data))
        if code == EXT_FROZENSET:
            return frozenset(self.unpack(data))
        if code == EXT_FRAME:
            kind, *ref = self.unpack(data)
            frame = self.buffer(ref)
            if kind == 0:
                return frame if type(frame) is bytes else bytes(frame)
            if kind == 1:
                return frame if type(frame) is bytearray else bytearray(frame)
            return memoryview(frame)
        if code == EXT_PICKLE:
            if not self.allow_pickle:
                raise DeserializationError("refusing to unpickle data from an unauthenticated peer")
            payload_ref, *buffer_refs = self.unpack(data)
            buffers = [_writable(self.buffer(ref)) for ref in buffer_refs]
            return loads_pickle(self.buffer(payload_ref), buffers=buffers)
        raise DeserializationError(f"unknown msgpack extension type {code}")


def _writable(frame: Any) -> Any:
    """``frame``, or a writable copy of it: arrays rebuilt on it must be writable."""
    if type(frame) is bytearray or not memoryview(frame).readonly:
        return frame
    return bytearray(frame)
