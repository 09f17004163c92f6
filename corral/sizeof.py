"""How many bytes a value occupies, cheaply: exact for buffers, estimated for containers."""

from __future__ import annotations

import sys
from typing import Any

_SAMPLE = 20  # containers: measure this many items and extrapolate
_MAX_DEPTH = 16  # below this many levels of containers, count only the container itself


def sizeof(obj: Any, depth: int = 0) -> int:
    nbytes = getattr(obj, "nbytes", None)  # NumPy arrays, memoryviews, pandas objects
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(obj, bytes | bytearray | str):
        return sys.getsizeof(obj)
    if depth >= _MAX_DEPTH:  # bounded recursion: what lies deeper is not counted
        return sys.getsizeof(obj)
    depth += 1
    if isinstance(obj, list | tuple | set | frozenset):
        items = list(obj)[:_SAMPLE] if not isinstance(obj, list | tuple) else obj[:_SAMPLE]
        if not items:
            return sys.getsizeof(obj)
        sampled = sum(sizeof(x, depth) for x in items)
        return sys.getsizeof(obj) + sampled * len(obj) // len(items)
    if isinstance(obj, dict):
        if not obj:
            return sys.getsizeof(obj)
        pairs = list(obj.items())[:_SAMPLE]
        sampled = sum(sizeof(k, depth) + sizeof(v, depth) for k, v in pairs)
        return sys.getsizeof(obj) + sampled * len(obj) // len(pairs)
    try:
        return sys.getsizeof(obj)
    except TypeError:
        return 64
