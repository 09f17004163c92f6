"""The few types every layer speaks of: task keys and the ranges of checked numbers.

A module of its own, importing nothing of corral, so that the scheduler's and the
worker's state machines (and the wire that checks their messages) share it without
importing each other or any server.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Annotated, NamedTuple

Key = Hashable  # str, or a tuple of str/int (dask's keys)


class AtLeast(NamedTuple):
    """``Annotated[int, AtLeast(1)]``: a number no smaller than ``low``."""

    low: float


# Declared ranges, checked when a peer's message becomes a stimulus (corral.core.validate).
Count = Annotated[int, AtLeast(0)]
Amount = Annotated[float, AtLeast(0)]
