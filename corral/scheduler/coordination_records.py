"""The coordination state machine's records, and the stimuli and actions of its own
that never travel (see ``corral.scheduler.coordination``)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral import messages as msgs
from corral.basic_types import Key

if TYPE_CHECKING:
    from corral.scheduler.coordination import Coordination


# -- stimuli and actions that never travel ------------------------------------------------


@dataclass(frozen=True, slots=True)
class HolderGone(msgs.CoordinationStimulus):
    """``client`` disconnected or was removed: its leases go, its waits end unanswered."""

    client: str


@dataclass(frozen=True, slots=True)
class Restarted(msgs.CoordinationStimulus):
    """The cluster restarted and forgot every task: values that hold futures are gone
    too (their data is); the rest, and leases, stay."""


@dataclass(frozen=True, slots=True)
class WantKeys(msgs.CoordinationAction):
    client: str
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class UnwantKeys(msgs.CoordinationAction):
    client: str
    keys: tuple[Key, ...]


Action = msgs.CoordinationReply | WantKeys | UnwantKeys


# -- records -----------------------------------------------------------------------------


@dataclass(slots=True)
class Waiter:
    request: msgs.CoordinationRequest
    deadline: float  # inf: none

    @property
    def ident(self) -> tuple[str, int]:
        return self.request.client, self.request.request


@dataclass(slots=True)
class Semaphore:
    max_leases: int
    leases: dict[str, str] = field(default_factory=dict)  # lease → holder
    waiters: deque[Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class Event:
    is_set: bool = False
    waiters: deque[Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class Variable:
    item: msgs.Item | None = None
    waiters: deque[Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class Queue:
    items: deque[msgs.Item] = field(default_factory=deque)
    getters: deque[Waiter] = field(default_factory=deque)
    putters: deque[Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class Holder:
    last_seen: float
    leases: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, name, lease)


def check(machine: Coordination) -> None:
    """Assert the invariants tying waits, leases, holders and held keys together."""
    queued = [w for sem in machine.semaphores.values() for w in sem.waiters]
    queued += [w for e in machine.events.values() for w in e.waiters]
    queued += [w for v in machine.variables.values() for w in v.waiters]
    queued += [w for q in machine.queues.values() for w in (*q.getters, *q.putters)]
    queued += [w for ws in machine.dataset_waiters.values() for w in ws]
    assert sorted(w.ident for w in queued) == sorted(machine.waits), "waits out of step"
    leases = {(k, n, lease): c for (k, n), sem in machine.semaphores.items()
              for lease, c in sem.leases.items()}
    assert {(*t, c) for c, h in machine.holders.items() for t in h.leases} == {
        (*t, c) for t, c in leases.items()}, "holders out of step with leases"
    items: list[msgs.Item] = [v.item for v in machine.variables.values()
                              if v.item is not None]
    items += [i for q in machine.queues.values() for i in q.items]
    items += [w.request.item for q in machine.queues.values() for w in q.putters
              if isinstance(w.request, msgs.PutQueue)]
    items += list(machine.datasets.values())
    counted: Counter[Key] = Counter(k for item in items for k in dict.fromkeys(item[1]))
    assert counted == machine.held, (counted, machine.held)
