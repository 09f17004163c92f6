"""What the scheduler knows about each task and worker: plain records and their states.

The decisions that change them live in ``corral.scheduler.state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeAlias, TypeVar

from corral.basic_types import Key

T = TypeVar("T")


class TS(Enum):
    RELEASED = "released"
    WAITING = "waiting"
    NO_WORKER = "no-worker"
    QUEUED = "queued"  # root-ish, ready, held on the scheduler until a thread frees up
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
    (TS.NO_WORKER, TS.MEMORY), (TS.NO_WORKER, TS.QUEUED),
    (TS.WAITING, TS.QUEUED), (TS.QUEUED, TS.PROCESSING), (TS.QUEUED, TS.RELEASED),
    (TS.QUEUED, TS.ERRED), (TS.QUEUED, TS.MEMORY),
    (TS.PROCESSING, TS.MEMORY), (TS.PROCESSING, TS.ERRED), (TS.PROCESSING, TS.RELEASED),
    (TS.MEMORY, TS.RELEASED), (TS.ERRED, TS.RELEASED),
})  # fmt: skip

# The table again, by the state moved from: one lookup a transition, no tuple built.
ALLOWED: dict[TS, frozenset[TS]] = {
    old: frozenset(new for o, new in TRANSITIONS if o is old) for old in TS}

ACTIVE = frozenset({TS.WAITING, TS.NO_WORKER, TS.QUEUED, TS.PROCESSING})

# The pseudo-client that wants fire-and-forget tasks until they are done; never told.
FIRE_AND_FORGET = "fire-and-forget"
# The name of a placeholder: a key a client holds a future of before its graph arrived
# (``client_handlers.client_desires_keys``); the graph's task replaces it.
AWAITED = "(awaited)"


# A record's links to others (inputs, dependents, holders, wanters, ...) are ordered
# sets: they iterate in the order things happened, so the same stimuli give the same
# actions in every run and in a replay (a set of records hashed by id() would iterate
# in the order of memory addresses). Most hold one to a few items (a pending task's
# one input, its one client): those are tuples, 48-120 bytes where a dict takes 232;
# past ``SMALL`` items a dict used as an ordered set (values None) keeps membership
# O(1). Empty is the empty tuple ``NONE``, shared by every record. Only ``added`` and
# ``discarded`` change a link set, and both return the one to keep.
Links: TypeAlias = "tuple[T, ...] | dict[T, None]"

NONE: tuple[Any, ...] = ()
SMALL = 8


def added(items: Links[T], item: T) -> Links[T]:
    if not isinstance(items, dict):
        if item in items:
            return items
        if len(items) < SMALL:
            return (*items, item)
        grown = dict.fromkeys(items)
        grown[item] = None
        return grown
    items[item] = None
    return items


def links(items: list[T]) -> Links[T]:
    """The link set of ``items``, distinct already, as ``added`` one by one would make it."""
    return tuple(items) if len(items) <= SMALL else dict.fromkeys(items)


def extended(items: Links[T], new: list[T]) -> Links[T]:
    """``items`` with ``new`` added, distinct and none among them already: what ``added``
    one at a time would give, in one step."""
    if isinstance(items, dict):
        items.update(dict.fromkeys(new))
        return items
    if len(items) + len(new) <= SMALL:
        return (*items, *new)
    return dict.fromkeys((*items, *new))


def discarded(items: Links[T], item: T) -> Links[T]:
    if not isinstance(items, dict):
        if item not in items:
            return items
        if len(items) == 1:
            return NONE  # the usual case: the one input, holder or client goes
        i = items.index(item)  # its one place: a link set holds each item once
        return items[:i] + items[i + 1:]
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
    # Seceded (``corral.secede()``): still processing here, but out of the thread slots,
    # so neither load (their estimate is 0 in ``processing``) nor queued.
    long_running: set[TaskState] = field(default_factory=set)
    has_what: dict[TaskState, None] = field(default_factory=dict)  # an ordered set
    nbytes: int = 0
    occupancy: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # totals, e.g. {"GPU": 2}
    retiring: bool = False  # being retired: takes no new tasks, its data moves away
    paused: bool = False  # over its memory's pause threshold: gets no new tasks

    @property
    def takes_tasks(self) -> bool:
        return not (self.retiring or self.paused)

    def load(self) -> float:
        return self.occupancy / self.nthreads

    def queued(self) -> int:
        """Tasks here that hold or wait for a thread slot (seceded ones do not)."""
        return len(self.processing) - len(self.long_running)

    def supplies(self, needs: dict[str, float] | None) -> bool:
        """Has this worker enough of each resource to ever run a task needing ``needs``?"""
        return not needs or all(self.resources.get(r, 0) >= n for r, n in needs.items())


@dataclass(eq=False, slots=True)
class TaskState:
    key: Key
    run_spec: bytes | None = None
    function: bytes | None = None  # pickled, shared by every task of a map; or in run_spec
    state: TS = TS.RELEASED
    name: str = ""
    priority: tuple[float, ...] = (0,)
    # Ordered sets (``Links``), the shared empty NONE until something is added.
    dependencies: Links[TaskState] = NONE
    dependents: Links[TaskState] = NONE
    waiting_on: Links[TaskState] = NONE
    who_has: Links[WorkerState] = NONE
    who_wants: Links[str] = NONE
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
    # Checkpoints (``corral.scheduler.checkpoints``): seconds of compute a loss of this
    # result would redo, the checkpoints its lineage stops at, and whether it is one.
    lineage: float = 0.0
    anchors: tuple[TaskState, ...] = NONE
    checkpoint: bool = False
