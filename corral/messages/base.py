"""What every message is: its role for the state machines (stimulus or action), its
direction on the wire (to or from a worker or client), and how it is read and written.
``corral.messages`` defines the messages themselves on these bases."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self, TypeVar

from corral.exceptions import InvalidMessage

__all__ = [
    "CoordinationAction",
    "CoordinationStimulus",
    "Event",
    "FromClient",
    "FromWorker",
    "M",
    "Message",
    "SchedulerAction",
    "SchedulerStimulus",
    "StimulusIds",
    "ToClient",
    "ToWorker",
    "WorkerStimulus",
]


M = TypeVar("M", bound="Message")


class StimulusIds:
    """``<origin>-1``, ``<origin>-2``, ...: ids unique among those one origin makes."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.origin}-{next(self._count)}"


# -- roles --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """Anything a state machine takes in or gives out: it has a cause."""

    stimulus_id: str


@dataclass(frozen=True, slots=True)
class SchedulerStimulus(Event):
    """Fed to ``SchedulerState.handle``."""


@dataclass(frozen=True, slots=True)
class SchedulerAction(Event):
    """Returned by ``SchedulerState.handle``."""


@dataclass(frozen=True, slots=True)
class WorkerStimulus(Event):
    """Fed to ``WorkerState.handle``."""


@dataclass(frozen=True, slots=True)
class CoordinationStimulus(Event):
    """Fed to ``Coordination.handle`` (the scheduler's locks, queues, variables...)."""


@dataclass(frozen=True, slots=True)
class CoordinationAction(Event):
    """Returned by ``Coordination.handle``."""


# -- directions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(Event):
    op: ClassVar[str]
    local_fields: ClassVar[frozenset[str]] = frozenset()  # set by the receiver, never sent

    def to_wire(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"op": self.op}
        names = _WIRE_FIELDS.get(type(self))
        if names is None:
            names = _WIRE_FIELDS[type(self)] = tuple(
                f.name for f in fields(self) if f.name not in self.local_fields)
        for name in names:
            msg[name] = getattr(self, name)
        return msg

    @classmethod
    def from_wire(cls, msg: Mapping[str, Any], **local: Any) -> Self:
        """The message ``msg`` (a dict off the wire) stands for; the receiver gives the
        ``local_fields`` (and a ``stimulus_id`` if the sender, an older peer, gave none)."""
        given = dict(msg)
        given.pop("op", None)
        for name in cls.local_fields:
            if name in given:
                refused = sorted(cls.local_fields & given.keys())
                raise InvalidMessage(f"{cls.op}: field(s) {', '.join(refused)} are not "
                                     "the sender's to set")
        given.update(local)
        return _build()(cls, given)


def _build() -> Any:
    """``corral.core.validate.build``, imported on first use: the pure state machines
    build messages but never read them, and load nothing of the servers' layers
    (tests/test_layers.py)."""
    global _build_fn
    if _build_fn is None:
        from corral.core.validate import build

        _build_fn = build
    return _build_fn


_build_fn: Any = None


_WIRE_FIELDS: dict[type[Message], tuple[str, ...]] = {}  # per class: the fields that travel


@dataclass(frozen=True, slots=True, kw_only=True)
class ToWorker(Message):
    local_fields = frozenset({"worker"})
    worker: str = ""  # the destination


@dataclass(frozen=True, slots=True, kw_only=True)
class FromWorker(Message):
    local_fields = frozenset({"worker"})
    worker: str = ""  # the sender, known from its stream


@dataclass(frozen=True, slots=True, kw_only=True)
class ToClient(Message):
    local_fields = frozenset({"client"})
    client: str  # the destination


@dataclass(frozen=True, slots=True, kw_only=True)
class FromClient(Message):
    local_fields = frozenset({"client"})
    client: str = ""  # the sender, known from its stream
