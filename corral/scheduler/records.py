"""What the scheduler knows about each task and worker: plain records and their states.

The decisions that change them live in ``corral.scheduler.state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from corral.basic_types import Key

T = TypeVar("T")


class TS(Enum):
    RELEASED = "released"
    WAITING = "waiting"
    NO_WORKER = "no-worker"
    PROCESSING = "processing"
    MEMORY = "memory"
    ERRED = "erred"

    # Identity, in C: the default Enum hash is a Python call, paid on every transition.
    __hash__ = object.__hash__


TRANSITIONS: frozenset[tuple[TS, TS]] = frozenset({
    (TS.RELEASED, TS.WAITING), (TS.RELEASED, TS.MEMORY), (TS.RELEASED, TS.ERRED),
    (TS.WAITING, TS.PROCESSING), (TS.WAITING, TS.NO_WORKER), (TS.WAITING, TS.RELEASED),
    (TS.WAITING, TS.ERRED), (TS.WAITING, TS.MEMORY),
    (TS.NO_WORKER, TS.PROCESSING), (TS.NO_WORKER, TS.RELEASED), (TS.NO_WORKER, TS.ERRED),
    (TS.NO_WORKER, TS.MEMORY),
    (TS.PROCESSING, TS.MEMORY), (TS.PROCESSING, TS.ERRED), (TS.PROCESSING, TS.RELEASED),
    (TS.MEMORY, TS.RELEASED), (TS.ERRED, TS.RELEASED),
})  # fmt: skip

ACTIVE = (TS.WAITING, TS.NO_WORKER, TS.PROCESSING)


# A record's links to others (inputs, dependents, holders, ...) are dicts used as ordered
# sets, every value None. They iterate in the order things happened, so the same stimuli
# give the same actions in every run and in a replay, where a set of records hashed by
# id() iterates in the order of memory addresses; and a dict of 5-16 entries takes half
# the bytes of a set. Empty ones are all this one read-only object: 100 000 pending tasks
# would otherwise hold ~500 000 empty containers.
class _Empty(dict[Any, None]):
    """The shared empty link set: read-only, and hashable so that it can be a default."""

    __slots__ = ()
    __hash__ = object.__hash__  # type: ignore[assignment]

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("NONE is shared by every record: replace it, never fill it")

    __setitem__ = setdefault = update = _refuse


NONE: dict[Any, None] = _Empty()


def added(items: dict[T, None], item: T) -> dict[T, None]:
    if items is NONE:
        return {item: None}
    items[item] = None
    return items


def discarded(items: dict[T, None], item: T) -> dict[T, None]:
    if items is NONE:
        return NONE
    items.pop(item, None)
    return items or NONE


@dataclass(eq=False, slots=True)
class WorkerState:
    address: str
    nthreads: int
    memory_limit: int = 0
    name: str = ""
    processing: dict[TaskState, float] = field(default_factory=dict)  # task → est. duration
    executing: set[TaskState] = field(default_factory=set)  # started, per the worker
    has_what: dict[TaskState, None] = field(default_factory=dict)  # an ordered set
    nbytes: int = 0
    occupancy: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # totals, e.g. {"GPU": 2}
    paused: bool = False  # over its memory's pause threshold: gets no new tasks

    def load(self) -> float:
        return self.occupancy / self.nthreads

    def supplies(self, needs: dict[str, float] | None) -> bool:
        """Has this worker enough of each resource to ever run a task needing ``needs``?"""
        return not needs or all(self.resources.get(r, 0) >= n for r, n in needs.items())


@dataclass(eq=False, slots=True)
class TaskState:
    key: Key
    run_spec: bytes | None = None
    state: TS = TS.RELEASED
    name: str = ""
    priority: tuple[float, ...] = (0,)
    # Ordered sets, the shared empty NONE until something is added (see ``added``).
    dependencies: dict[TaskState, None] = NONE
    dependents: dict[TaskState, None] = NONE
    waiting_on: dict[TaskState, None] = NONE
    who_has: dict[WorkerState, None] = NONE
    who_wants: dict[str, None] = NONE
    processing_on: WorkerState | None = None
    nbytes: int = 0
    typename: str = ""
    restrictions: frozenset[str] | None = None
    loose_restrictions: bool = False
    resources: dict[str, float] | None = None
    retries: int = 0
    suspicious: int = 0  # workers that died running it (see SchedulerState._on_RemoveWorker)
    finished_once: bool = False  # ran to completion somewhere: never a suspect again
    # Dependents waiting, without a worker or processing (``ACTIVE``): kept by
    # ``SchedulerState.transition`` so that "is this input still needed?" costs O(1), not
    # a scan of every dependent (a shuffle's inputs have hundreds).
    active_dependents: int = 0
    error: tuple[bytes, bytes, str, str] | None = None  # exception, traceback, texts
