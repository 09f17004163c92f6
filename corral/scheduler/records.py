"""What the scheduler knows about each task and worker: plain records and their states.

The decisions that change them live in ``corral.scheduler.state``.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
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


# A task's empty sets are all this one object: 100 000 pending tasks would otherwise
# hold ~500 000 empty sets of 216 bytes each.
NONE: frozenset[Any] = frozenset()


def added(items: AbstractSet[T], item: T) -> set[T]:
    if items is NONE:
        return {item}
    items.add(item)  # type: ignore[attr-defined]
    return items  # type: ignore[return-value]


def discarded(items: AbstractSet[T], item: T) -> AbstractSet[T]:
    if items is NONE:
        return NONE
    items.discard(item)  # type: ignore[attr-defined]
    return items or NONE


@dataclass(eq=False, slots=True)
class WorkerState:
    address: str
    nthreads: int
    memory_limit: int = 0
    name: str = ""
    processing: dict[TaskState, float] = field(default_factory=dict)  # task → est. duration
    executing: set[TaskState] = field(default_factory=set)  # started, per the worker
    has_what: set[TaskState] = field(default_factory=set)
    nbytes: int = 0
    occupancy: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # totals, e.g. {"GPU": 2}

    def __hash__(self) -> int:  # by address, not identity: see TaskState.__hash__
        return hash(self.address)

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
    # Empty sets are the shared NONE until something is added (see ``added``).
    dependencies: AbstractSet[TaskState] = NONE
    dependents: AbstractSet[TaskState] = NONE
    waiting_on: AbstractSet[TaskState] = NONE
    who_has: AbstractSet[WorkerState] = NONE
    who_wants: AbstractSet[str] = NONE
    processing_on: WorkerState | None = None
    nbytes: int = 0
    typename: str = ""
    restrictions: frozenset[str] | None = None
    loose_restrictions: bool = False
    resources: dict[str, float] | None = None
    retries: int = 0
    suspicious: int = 0  # workers that died running it (see SchedulerState._on_RemoveWorker)
    finished_once: bool = False  # ran to completion somewhere: never a suspect again
    error: tuple[bytes, bytes, str, str] | None = None  # exception, traceback, texts

    # Hashed by key, not identity (equality stays identity): a set of tasks then iterates
    # in an order fixed by the keys and the history of the set, not by where objects
    # landed in memory, so a replay into fresh objects makes the same actions in the same
    # order (across processes too, with the same PYTHONHASHSEED).
    def __hash__(self) -> int:
        return hash(self.key)
