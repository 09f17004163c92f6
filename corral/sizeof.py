"""How many bytes a value occupies, cheaply: exact for buffers, estimated for containers."""

from __future__ import annotations

import sys
from typing import Any

_SAMPLE = 20  # containers: measure this many items and extrapolate


def sizeof(obj: Any) -> int:
    nbytes = getattr(obj, "nbytes", None)  # NumPy arrays, memoryviews, pandas objects
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(obj, bytes | bytearray | str):
        return sys.getsizeof(obj)
    if isinstance(obj, list | tuple | set | frozenset):
        items = list(obj)[:_SAMPLE] if not isinstance(obj, list | tuple) else obj[:_SAMPLE]
        if not items:
            return sys.getsizeof(obj)
        sampled = sum(sizeof(x) for x in items)
        return sys.getsizeof(obj) + sampled * len(obj) // len(items)
    if isinstance(obj, dict):
        if not obj:
            return sys.getsizeof(obj)
        pairs = list(obj.items())[:_SAMPLE]
        sampled = sum(sizeof(k) + sizeof(v) for k, v in pairs)
        return sys.getsizeof(obj) + sampled * len(obj) // len(pairs)
    try:
        return sys.getsizeof(obj)
    except TypeError:
        return 64
