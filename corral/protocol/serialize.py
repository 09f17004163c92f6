"""Messages to frames and back.

Frame 0 is msgpack. Values msgpack cannot carry become msgpack extension types:

* tuples, sets and frozensets keep their type (their items packed recursively);
* large ``bytes``/``bytearray``/``memoryview`` travel as frames of their own;
* anything else is pickled (protocol 5; cloudpickle for functions defined in
  ``__main__``, lambdas and closures), its out-of-band buffers — e.g. NumPy arrays —
  travelling as their own frames and coming back without a copy.

Decoding a pickle is refused unless the codec was built with ``allow_pickle=True``:
the handshake only does that once the peer has authenticated.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle
import msgpack

from corral.exceptions import DeserializationError
from corral.protocol import compression

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_PICKLE = 4  # [frame index, compression, [buffer frame index, compression]...]
EXT_FRAME = 5  # [kind, frame index, compression]

INLINE_BYTES_LIMIT = 64 * 1024  # larger binary values become frames of their own
_BYTES_KINDS = {bytes: 0, bytearray: 1, memoryview: 2}


def dumps_pickle(obj: Any, buffer_callback: Any = None) -> bytes:
    """Pickle with protocol 5, by value where the receiver could not import by reference."""
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


def _hoist_binary(obj: Any) -> Any:
    """Wrap large (or mutable) binary values in containers as ``_Binary``.

    msgpack would copy them into frame 0; as frames of their own they are written
    and read in place. Containers are copied only where something was wrapped.
    """
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if kind is dict:
        changed = None
        for key, value in obj.items():
            if type(value) in _SCALARS:
                continue
            hoisted = _hoist_binary(value)
            if hoisted is not value:
                if changed is None:
                    changed = dict(obj)
                changed[key] = hoisted
        return obj if changed is None else changed
    if kind is list or kind is tuple:
        items = [v if type(v) in _SCALARS else _hoist_binary(v) for v in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        return items if kind is list else tuple(items)
    if kind is bytes:
        return _Binary(obj) if len(obj) > INLINE_BYTES_LIMIT else obj
    if kind is bytearray or kind is memoryview:
        return _Binary(obj)
    return obj


class _Encoder:
    """Packs one message at a time; reused, so its msgpack ``Packer`` is built once."""

    def __init__(self, compression_name: str | None) -> None:
        self.frames: list[Any] = []
        self.compression = compression_name
        self._packer = msgpack.Packer(default=self.default, strict_types=True, use_bin_type=True)

    def encode(self, msg: Any) -> list[Any]:
        self.frames = frames = [b""]
        try:
            frames[0] = self._packer.pack(_hoist_binary(msg))
        except (OverflowError, ValueError, UnicodeEncodeError, TypeError):
            # Values msgpack refuses outright (huge ints, lone surrogates): pickle it all.
            self.frames = frames = [b""]
            frames[0] = msgpack.packb(self.pickle(msg))
        finally:
            self.frames = []
        return frames

    def add_frame(self, buf: Any) -> list[Any]:
        codec, data = compression.maybe_compress(self.compression, buf)
        self.frames.append(data)
        return [len(self.frames) - 1, codec]

    def pack(self, obj: Any) -> bytes:
        """Pack a nested value (the shared packer is busy with the enclosing message)."""
        return msgpack.packb(obj, default=self.default, strict_types=True, use_bin_type=True)

    def default(self, obj: Any) -> msgpack.ExtType:
        kind = type(obj)
        if kind is tuple:
            return msgpack.ExtType(EXT_TUPLE, self.pack(list(obj)))
        if kind is set:
            return msgpack.ExtType(EXT_SET, self.pack(list(obj)))
        if kind is frozenset:
            return msgpack.ExtType(EXT_FROZENSET, self.pack(list(obj)))
        if kind is _Binary:
            value = obj.value
            view = memoryview(value)
            frame = view.cast("B") if view.contiguous else view.tobytes()
            ref = self.add_frame(frame)
            return msgpack.ExtType(EXT_FRAME, self.pack([_BYTES_KINDS[type(value)], *ref]))
        return self.pickle(obj)

    def pickle(self, obj: Any) -> msgpack.ExtType:
        buffers: list[pickle.PickleBuffer] = []
        payload = dumps_pickle(obj, buffer_callback=buffers.append)
        refs = [self.add_frame(payload)]
        refs.extend(self.add_frame(b.raw()) for b in buffers)
        return msgpack.ExtType(EXT_PICKLE, self.pack(refs))


class MessageCodec:
    """The codec corral installs on a comm after the handshake."""

    def __init__(
        self,
        allow_pickle: bool = True,
        compression_name: str | None = None,
        max_frame_bytes: int = 2**31,
    ) -> None:
        self.allow_pickle = allow_pickle
        self.compression = compression.check_name(compression_name)
        self.max_frame_bytes = max_frame_bytes  # also bounds what a frame decompresses to
        self._encoder = _Encoder(self.compression)

    def encode(self, msg: Any) -> list[Any]:
        return self._encoder.encode(msg)

    def decode(self, frames: list[Any]) -> Any:
        try:
            if len(frames) == 1:  # no frames to refer to: containers only
                return msgpack.unpackb(
                    frames[0], ext_hook=_single_frame_ext_hook, strict_map_key=False
                )
            return _Decoder(frames, self).unpack(frames[0])
        except DeserializationError:
            raise
        except Exception as e:
            raise DeserializationError(f"cannot decode message: {type(e).__name__}: {e}") from e


_NO_PICKLE = MessageCodec(allow_pickle=False)


def _single_frame_ext_hook(code: int, data: bytes) -> Any:
    if code in (EXT_TUPLE, EXT_SET, EXT_FROZENSET):
        return _Decoder([data], _NO_PICKLE).ext_hook(code, data)
    raise DeserializationError(f"extension type {code} refers to a frame the message lacks")


class _Decoder:
    def __init__(self, frames: list[Any], codec: MessageCodec) -> None:
        self.frames = frames
        self.allow_pickle = codec.allow_pickle
        self.compression = codec.compression
        self.max_frame_bytes = codec.max_frame_bytes

    def unpack(self, data: Any) -> Any:
        return msgpack.unpackb(data, ext_hook=self.ext_hook, strict_map_key=False, raw=False)

    def frame(self, index: int, codec: str | None) -> Any:
        if not 0 < index < len(self.frames):
            raise DeserializationError(f"message refers to missing frame {index}")
        data = self.frames[index]
        if codec is None:
            return data
        if codec != self.compression:
            raise DeserializationError(f"frame compressed with {codec!r}, which was not agreed")
        if compression.decompressed_size(codec, data) > self.max_frame_bytes:
            raise DeserializationError("compressed frame would exceed the frame size limit")
        return compression.decompress(codec, data)

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == EXT_TUPLE:
            return tuple(self.unpack(data))
        if code == EXT_SET:
            return set(self.unpack(data))
        if code == EXT_FROZENSET:
            return frozenset(self.unpack(data))
        if code == EXT_FRAME:
            kind, index, codec = self.unpack(data)
            frame = self.frame(index, codec)
            if kind == 0:
                return frame if type(frame) is bytes else bytes(frame)
            if kind == 1:
                return frame if type(frame) is bytearray else bytearray(frame)
            return memoryview(frame)
        if code == EXT_PICKLE:
            if not self.allow_pickle:
                raise DeserializationError("refusing to unpickle data from an unauthenticated peer")
            (index, codec), *buffer_refs = self.unpack(data)
            buffers = [self.frame(i, c) for i, c in buffer_refs]
            return pickle.loads(self.frame(index, codec), buffers=buffers)
        raise DeserializationError(f"unknown msgpack extension type {code}")
