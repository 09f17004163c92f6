"""Large NumPy results placed in shared memory the moment a task makes them.

A worker's peers on the same host get a large value through shared memory
(``corral.comm.shm``): without this, the worker copies the value into a segment on
every transfer, then the peer maps it. With it, the task's thread copies a large NumPy
result into a segment of its own once (``segments.seal``), right after the task, and
the worker keeps the array rebuilt on a private mapping of it. A transfer then sends
that segment as it is: no copy on either side, whatever the size. Peers that map it
share its pages, so a value held by several workers of one host is in memory once.

The copy costs about what the task paid to write the array, on the task's thread, and
is paid whether or not the value ever moves; ``comm.shared-memory.place-results: false``
turns it off. Only plain, writable NumPy arrays of fixed-size items, C or Fortran
contiguous and at least ``comm.shared-memory.threshold`` large, are placed: a copy of
anything else could differ from what the task returned.

Both the worker's array and each peer's are copy-on-write mappings: a task that writes
into one changes only its own, never the segment, so what a peer receives is the result
as the task returned it.
"""

from __future__ import annotations

import sys
from typing import Any

from corral import config
from corral.comm import segments, shm


def enabled() -> bool:
    return shm.enabled() and bool(config.get("comm.shared-memory.place-results"))


def place(value: Any, nbytes: int) -> Any:
    """``value``, or the same array rebuilt on a sealed segment (module docstring)."""
    np = sys.modules.get("numpy")
    if np is None or type(value) is not np.ndarray or nbytes < shm.threshold():
        return value
    flags = value.flags
    if value.dtype.hasobject or not flags.writeable or not (flags.c_contiguous
                                                           or flags.f_contiguous):
        return value
    if not enabled():
        return value
    order = "C" if flags.c_contiguous else "F"
    data = memoryview(value.reshape(-1, order=order)).cast("B")
    if segments.sealed_segment(data) is not None:  # a task returned its sealed input
        return value
    view = segments.seal(data)
    if view is None:  # memory or mappings short: the result stays where it is
        return value
    return np.ndarray(value.shape, value.dtype, buffer=view, order=order)
