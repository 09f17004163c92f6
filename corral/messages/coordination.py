"""The coordination messages, client ↔ scheduler: locks, semaphores, events, variables,
queues and datasets, decided by ``corral.scheduler.coordination``'s pure machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from corral.basic_types import Amount, AtLeast, Count, Key
from corral.messages.base import CoordinationAction, CoordinationStimulus, FromClient, ToClient

__all__ = [
    "KINDS",
    "TIMED_OPS",
    "AcquireLease",
    "CancelWait",
    "CoordinationReply",
    "CoordinationRequest",
    "GetDataset",
    "GetQueue",
    "GetVariable",
    "Inspect",
    "Item",
    "PublishDataset",
    "PutQueue",
    "RefreshLeases",
    "ReleaseLease",
    "SetEvent",
    "SetVariable",
    "UnpublishDataset",
    "WaitEvent",
]


# A value held on the scheduler (in a variable, a queue, a dataset): pickled by the client
# and opaque to the scheduler, with the keys of the futures inside it, kept alive there
# while it is held.
Item = tuple[bytes, tuple[Key, ...]]
# The kinds of named primitives; a name refers to one primitive of each kind.
KINDS = ("lock", "semaphore", "event", "variable", "queue", "dataset")


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinationRequest(FromClient, CoordinationStimulus):
    """A request to the primitive ``name`` of its kind; answered by exactly one
    ``CoordinationReply`` with the same ``request`` number, unless cancelled first.
    ``timeout`` (seconds; None: no limit) counts from ``now``, when it arrived."""

    local_fields = frozenset({"client", "now"})
    request: Count
    name: str
    now: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AcquireLease(CoordinationRequest):
    """Take one of ``max_leases`` leases of a lock or semaphore, as ``lease``."""

    op = "acquire-lease"
    kind: str  # "lock" or "semaphore"
    lease: str
    max_leases: Annotated[int, AtLeast(1)] = 1
    timeout: Amount | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseLease(CoordinationRequest):
    op = "release-lease"
    kind: str
    lease: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetEvent(CoordinationRequest):
    op = "set-event"
    value: bool  # set (True) or clear (False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitEvent(CoordinationRequest):
    op = "wait-event"
    timeout: Amount | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetVariable(CoordinationRequest):
    op = "set-variable"
    item: Item | None  # None deletes the variable


@dataclass(frozen=True, slots=True, kw_only=True)
class GetVariable(CoordinationRequest):
    """The variable's item, once it has one."""

    op = "get-variable"
    timeout: Amount | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PutQueue(CoordinationRequest):
    """Append ``item``, waiting for room if the queue holds ``maxsize`` (0: unbounded)."""

    op = "put-queue"
    item: Item
    maxsize: Count = 0
    timeout: Amount | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetQueue(CoordinationRequest):
    """Take ``count`` items, oldest first, waiting for them; 0 takes all there are now."""

    op = "get-queue"
    count: Count = 1
    timeout: Amount | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishDataset(CoordinationRequest):
    op = "publish-dataset"
    item: Item
    override: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GetDataset(CoordinationRequest):
    op = "get-dataset"
    timeout: Amount | None = None  # None: answer at once, an error if it is not published


@dataclass(frozen=True, slots=True, kw_only=True)
class UnpublishDataset(CoordinationRequest):
    op = "unpublish-dataset"


@dataclass(frozen=True, slots=True, kw_only=True)
class Inspect(CoordinationRequest):
    """How the primitive ``name`` of ``kind`` stands: leases held, set or not, items
    queued, ...; for kind "dataset", the names published (``name`` is ignored)."""

    op = "inspect"
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelWait(FromClient, CoordinationStimulus):
    """The client gave up waiting on ``request`` (it timed out or was interrupted
    locally): no reply is due, and a lease granted meanwhile is released."""

    op = "cancel-wait"
    request: Count


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshLeases(FromClient, CoordinationStimulus):
    """The client is alive: its leases last another lease timeout from ``now``."""

    op = "refresh-leases"
    local_fields = frozenset({"client", "now"})
    now: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinationReply(ToClient, CoordinationAction):
    """The answer to ``request``: ``outcome`` "ok" (with ``value`` and ``items``),
    "timeout", or "error" (``error`` says why, in one line)."""

    op = "coordination-reply"
    request: Count
    outcome: str = "ok"
    value: Any = None
    items: tuple[Item, ...] = ()
    error: str = ""


# Coordination messages that need the time they arrived (``now``, set by the receiver).
TIMED_OPS = frozenset({"acquire-lease", "release-lease", "set-event", "wait-event",
                       "set-variable", "get-variable", "put-queue", "get-queue",
                       "publish-dataset", "get-dataset", "unpublish-dataset", "inspect",
                       "refresh-leases"})
