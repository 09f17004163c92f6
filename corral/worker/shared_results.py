"""Large NumPy results in shared memory: placed there when first sent, or as made.

A worker's peers on the same host get a large value through shared memory
(``corral.comm.shm``). Sent as it is, a value is copied into a segment on every
transfer, then the peer maps it. A value *sealed* instead (``segments.seal``: copied
once into a segment of the worker's own, and the worker keeps the array rebuilt on a
private mapping of it) is sent as that segment, with no copy on either side; peers that
map it share its pages, so a value held by several workers of one host is in memory
once.

When to seal is ``comm.shared-memory.place-results``:

* ``on-send`` (the default): a value is sealed the first time it is about to go to a
  same-host peer through shared memory (``corral.worker.serving``), and the
  worker's store keeps the sealed array in place of the private one. Only values that
  move pay the copy, once, and it costs no more than the copy every send made before
  (less, into a recycled segment); its later sends copy nothing.
* a size (e.g. ``8MiB``): every result that large is sealed as its task ends (``place``),
  on the task's thread, moved or not. Work whose large results all move costs the same
  (100 MB results made on one worker, read on the other: 0.65-0.68 s against
  0.64-0.66), work whose results mostly stay pays for copies nobody uses (a rechunk of
  100 MB chunks on two workers: 1.56-1.68 s against 1.26-1.49).
* ``false``: never; every same-host send copies.

Into fresh shared memory the copy costs ~0.5 ms per MB on a slow VM; the segments of
sealed values that are gone (and that no peer maps any more) are recycled, and copying
into one of those, through the window kept open on it, costs ~0.07-0.13 ms per MB
(``segments``). Only plain, writable NumPy arrays of fixed-size items, C or Fortran
contiguous, are sealed: a copy of anything else could differ from the original.

A sealed value's pages join the worker's RSS only as it reads them (or all at once, if
its segment was recycled: through the window); its memory watch counts the rest
(``corral.worker.process_memory``). Spilling it drops the array, hence its mapping:
its segment goes back to the cache, which the worker empties first when it must spill
or pause.

Both the worker's array and each peer's are copy-on-write mappings: a task that writes
into one changes only its own, never the segment, so what a peer receives is the value
as it was sealed.
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
ON_SEND = "on-send"


@functools.lru_cache(maxsize=8)
def _parse(setting: object) -> int | str | None:
    """The size from which results are placed as made, ``ON_SEND``, or None (never)."""
    text = str(setting).strip().lower()
    if setting is None or setting is False or text in _OFF:
        return None
    if setting is True or text in _TRUE:
        return 0
    if text == ON_SEND:
        return ON_SEND
    try:
        return utils.parse_bytes(str(setting))
    except ValueError as e:  # said once per setting; values are sent as they are
        logger.warning("comm.shared-memory.place-results: %s (a size, %s or false); "
                       "nothing is placed", e, ON_SEND)
        return None


def _setting() -> int | str | None:
    return _parse(config.get("comm.shared-memory.place-results")) if shm.enabled() else None


def threshold() -> int | None:
    """The size from which results are placed as they are made, or None if none are."""
    least = _setting()
    if least is None or least == ON_SEND:
        return None
    return max(int(least), shm.threshold())


def seals_on_send() -> bool:
    """Whether values are sealed the first time they are sent through shared memory."""
    return _setting() == ON_SEND


def sealable(value: Any) -> bool:
    """Whether ``value`` is an array that a copy reproduces exactly, and not sealed yet."""
    np = sys.modules.get("numpy")
    if np is None or type(value) is not np.ndarray:
        return False
    flags = value.flags
    if value.dtype.hasobject or not flags.writeable or not (flags.c_contiguous
                                                           or flags.f_contiguous):
        return False
    return segments.sealed_segment(_bytes(value)) is None  # e.g. a task returned its input


def _order(value: Any) -> str:
    return "C" if value.flags.c_contiguous else "F"


def _bytes(value: Any) -> memoryview:
    return memoryview(value.reshape(-1, order=_order(value))).cast("B")


def seal(value: Any) -> Any:
    """The same array rebuilt on a sealed segment, or ``value`` itself if memory or
    mappings are short. ``value`` must be ``sealable``."""
    np = sys.modules["numpy"]
    view = segments.seal(_bytes(value), shm.cache())  # a segment its peers released, if one fits
    if view is None:
        return value
    return np.ndarray(value.shape, value.dtype, buffer=view, order=_order(value))


def place(value: Any, nbytes: int) -> Any:
    """``value``, or, if results this large are placed as made, the same array sealed."""
    least = threshold()
    if least is None or nbytes < least or not sealable(value):
        return value
    return seal(value)
