"""Large NumPy results placed in shared memory the moment a task makes them.

A worker's peers on the same host get a large value through shared memory
(``corral.comm.shm``): without this, the worker copies the value into a segment on
every transfer, then the peer maps it. With it, the task's thread copies a large NumPy
result into a segment of its own once (``segments.seal``), right after the task, and
the worker keeps the array rebuilt on a private mapping of it. A transfer then sends
that segment as it is: no copy on either side, whatever the size. Peers that map it
share its pages, so a value held by several workers of one host is in memory once.

The copy is paid on the task's thread whether or not the value ever moves. Into fresh
shared memory it costs ~0.5 ms per MB on a slow VM; but the segments of placed results
that are gone (and that no peer maps any more) are recycled, and copying into one of
those, through the window kept open on it, costs ~0.07-0.13 ms per MB (``segments``).
Work whose large results all move then costs the same placed or not (100 MB results
made on one worker, read on the other: 0.65-0.68 s against 0.64-0.66), but work whose
large results mostly stay where they are made pays for copies nobody uses (a rechunk of
100 MB chunks on two workers: 1.56-1.68 s against 1.26-1.49). So only results of
``comm.shared-memory.place-results`` and up are placed, none by default; 8 MiB is
where the copy is most of what a transfer costs, for work whose large results mostly
move or are read by several workers. And only plain, writable NumPy arrays of fixed-size
items, C or Fortran contiguous: a copy of anything else could differ from what the task
returned.

A placed result's pages join the worker's RSS only as it reads them (or all at once, if
its segment was recycled: through the window); its memory watch counts the rest
(``corral.worker.process_memory``). Spilling it drops the array, hence its mapping:
its segment goes back to the cache, which the worker empties first when it must spill
or pause.

Both the worker's array and each peer's are copy-on-write mappings: a task that writes
into one changes only its own, never the segment, so what a peer receives is the result
as the task returned it.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

from corral import config, utils
from corral.comm import segments, shm

logger = logging.getLogger("corral.worker")


_OFF = {"false", "none", "off", "no", "0"}
_TRUE = {"true", "yes", "on"}


@functools.lru_cache(maxsize=8)
def _parse(setting: object) -> int | None:
    text = str(setting).strip().lower()
    if setting is None or setting is False or text in _OFF:
        return None
    if setting is True or text in _TRUE:
        return 0
    try:
        return utils.parse_bytes(str(setting))
    except ValueError as e:  # said once per setting; results stay where they are
        logger.warning("comm.shared-memory.place-results: %s; no results are placed", e)
        return None


def threshold() -> int | None:
    """The size from which results are placed, or None if none are."""
    least = _parse(config.get("comm.shared-memory.place-results"))
    if least is None or not shm.enabled():
        return None
    return max(least, shm.threshold())


def place(value: Any, nbytes: int) -> Any:
    """``value``, or the same array rebuilt on a sealed segment (module docstring)."""
    np = sys.modules.get("numpy")
    if np is None or type(value) is not np.ndarray:
        return value
    flags = value.flags
    if value.dtype.hasobject or not flags.writeable or not (flags.c_contiguous
                                                           or flags.f_contiguous):
        return value
    least = threshold()
    if least is None or nbytes < least:
        return value
    order = "C" if flags.c_contiguous else "F"
    data = memoryview(value.reshape(-1, order=order)).cast("B")
    if segments.sealed_segment(data) is not None:  # a task returned its sealed input
        return value
    view = segments.seal(data, shm.cache())  # a segment its peers released, if one fits
    if view is None:  # memory or mappings short: the result stays where it is
        return value
    return np.ndarray(value.shape, value.dtype, buffer=view, order=order)
