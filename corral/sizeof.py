"""How many bytes a value occupies, cheaply: exact for buffers, estimated for containers."""

from __future__ import annotations

import sys
from typing import Any

_SAMPLE = 20  # containers: measure this many items and extrapolate
_MAX_DEPTH = 16  # below this many levels of containers, count only the container itself


def sizeof(obj: Any, depth: int = 0) -> int:
    nbytes = getattr(obj, "nbytes", None)  # NumPy arrays, memoryviews, pandas Series
    if isinstance(nbytes, int):
        return nbytes + _objects(obj)
    blocks = _frame_blocks(obj)
    if blocks is not None:
        return sizeof(obj.index) + sum(b.nbytes + _objects(b) for b in blocks)
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


def _objects(array: Any) -> int:
    """The Python objects a NumPy array of dtype ``object`` points to (its ``nbytes``
    counts only the pointers), estimated from a sample."""
    np = sys.modules.get("numpy")
    dtype = getattr(array, "dtype", None)
    if np is None or not isinstance(dtype, np.dtype) or dtype.kind != "O" or not array.size:
        return 0
    flat = np.asarray(array).ravel()
    sample = flat[:: max(len(flat) // _SAMPLE, 1)][:_SAMPLE]
    return sum(map(sys.getsizeof, sample)) * len(flat) // len(sample)


def _frame_blocks(obj: Any) -> list[Any] | None:
    """A pandas DataFrame's arrays, one per run of columns of one dtype; else None.
    (Its ``__sizeof__`` measures each column through a Series built for it: about a
    millisecond a frame, which a shuffle's thousands of small pieces cannot afford.)"""
    if type(obj).__name__ != "DataFrame":
        return None
    try:
        return [block.values for block in obj._mgr.blocks]
    except AttributeError:
        return None
