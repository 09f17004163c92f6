"""The worker state machine's vocabulary: stimuli in, instructions out.

The worker server keeps the data itself (key → value) and runs the thread pool and
the peer transfers; the state machine only sees keys, sizes and outcomes, and decides
what to run, what to fetch from whom, and what to tell the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.basic_types import Key


@dataclass(frozen=True, slots=True)
class Stimulus:
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class ComputeTask(Stimulus):
    """From the scheduler: compute ``key``; inputs not held here are at ``who_has``."""

    key: Key
    run_spec: bytes
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, int]
    priority: tuple[float, ...]
    resources: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class FreeKeys(Stimulus):
    """From the scheduler: drop these keys unless another task here still needs them."""

    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class StealRequest(Stimulus):
    """From the scheduler: release ``key`` if it has not started running."""

    key: Key


@dataclass(frozen=True, slots=True)
class UpdateData(Stimulus):
    """Data put here directly (scatter, or a client's ``update_data``): ``key → nbytes``."""

    data: dict[Key, int]
    report: bool = True  # tell the scheduler we hold it


@dataclass(frozen=True, slots=True)
class ExecuteSuccess(Stimulus):
    key: Key
    nbytes: int
    typename: str
    start: float
    stop: float


@dataclass(frozen=True, slots=True)
class ExecuteFailure(Stimulus):
    key: Key
    exception: bytes
    traceback: bytes
    exception_text: str
    traceback_text: str
    start: float
    stop: float


@dataclass(frozen=True, slots=True)
class GatherDepSuccess(Stimulus):
    """A transfer from ``peer`` brought these keys (``key → nbytes``)."""

    peer: str
    data: dict[Key, int]


@dataclass(frozen=True, slots=True)
class GatherDepMissing(Stimulus):
    """``peer`` answered but did not have these keys."""

    peer: str
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class GatherDepFailure(Stimulus):
    """The transfer from ``peer`` failed (connection error): nothing arrived."""

    peer: str
    keys: tuple[Key, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RemoveWorkerPeer(Stimulus):
    """The scheduler says ``peer`` is gone: forget it as a source of data."""

    peer: str


# -- instructions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class Execute(Instruction):
    """Run ``key`` on a free thread; its inputs are all in memory here."""

    key: Key


@dataclass(frozen=True, slots=True)
class GatherDep(Instruction):
    """Fetch these keys from ``peer`` in one request."""

    peer: str
    keys: tuple[Key, ...]
    total_nbytes: int


@dataclass(frozen=True, slots=True)
class ReleaseData(Instruction):
    """Drop the values of these keys from the worker's data store."""

    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class SendToScheduler(Instruction):
    """A message for the scheduler's batched stream (a dict with an ``op``)."""

    msg: dict[str, Any]
