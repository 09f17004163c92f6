"""Optional compression of large frames, negotiated per connection.

Only frames of at least ``MIN_SIZE`` bytes are considered, and only kept compressed
when a sample shows they shrink: compressing random bytes costs time and saves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

MIN_SIZE = 64 * 1024
_SAMPLE = 10_000
_WORTH_IT = 0.9  # keep compression only if it saves at least 10 %

_Compress = Callable[[bytes | memoryview], bytes]
_Decompress = Callable[[bytes | bytearray | memoryview], bytes | bytearray]


def _load_codecs() -> dict[str, tuple[_Compress, _Decompress]]:
    codecs: dict[str, tuple[_Compress, _Decompress]] = {}
    try:
        import lz4.block

        # Decompressed frames may carry array buffers, which must come back writable.
        codecs["lz4"] = (lz4.block.compress, partial(lz4.block.decompress, return_bytearray=True))
    except ImportError:  # pragma: no cover - lz4 is a declared dependency
        pass
    return codecs


CODECS = _load_codecs()


def available() -> list[str]:
    return list(CODECS)


def check_name(name: str | None) -> str | None:
    if name is not None and name not in CODECS:
        raise ValueError(f"unknown or unavailable compression {name!r}; have {available()}")
    return name


def maybe_compress(name: str | None, frame: bytes | memoryview) -> tuple[str | None, object]:
    """Compress ``frame`` with codec ``name`` when it is large and compressible."""
    if name is None:
        return None, frame
    view = memoryview(frame).cast("B")
    if view.nbytes < MIN_SIZE:
        return None, frame
    compress, _ = CODECS[name]
    sample = view[:_SAMPLE]
    if len(compress(sample)) > _WORTH_IT * sample.nbytes:
        return None, frame
    compressed = compress(view)
    if len(compressed) > _WORTH_IT * view.nbytes:
        return None, frame
    return name, compressed


def decompressed_size(name: str, frame: bytes | bytearray | memoryview) -> int:
    """The size a frame will have once decompressed, read before decompressing it."""
    if name == "lz4":  # lz4.block stores it as a little-endian 32-bit prefix
        return int.from_bytes(bytes(memoryview(frame)[:4]), "little")
    raise ValueError(f"unknown compression {name!r}")


def decompress(name: str, frame: bytes | bytearray | memoryview) -> bytes | bytearray:
    try:
        _, decompress_fn = CODECS[name]
    except KeyError:
        raise ValueError(f"frame compressed with unknown codec {name!r}") from None
    return decompress_fn(frame)
