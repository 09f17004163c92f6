"""The worker state machine's vocabulary: stimuli in, instructions out.

The worker server keeps the data itself (key → value) and runs the thread pool and
the peer transfers; the state machine only sees keys, sizes and outcomes, and decides
what to run, what to fetch from whom, and what to tell the scheduler.

The stimuli that come from the scheduler (``ComputeTask``, ``FreeKeys``, ...) and what
it tells the scheduler (``SendToScheduler``) are messages of ``corral.messages``; those
declared here never leave the worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.basic_types import Key
from corral.messages import (
    AcquireReplicas,
    ComputeTask,
    FreeKeys,
    FromWorker,
    RemoveWorkerPeer,
    StealRequest,
)
from corral.messages import WorkerStimulus as Stimulus

__all__ = [
    "AcquireReplicas", "ComputeTask", "Execute", "ExecuteFailure", "ExecuteSuccess", "FreeKeys",
    "GatherDep", "GatherDepFailure", "GatherDepMissing", "GatherDepSuccess", "Instruction",
    "MemoryUsage",
    "Rejoin", "ReleaseData", "RemoveWorkerPeer", "Resume", "Secede", "SendToScheduler", "Spill",
    "StealRequest", "Stimulus", "UpdateData",
]


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
    pickled: bytes | None = None  # the result, pickled for a waiting client (small ones)


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
class MemoryUsage(Stimulus):
    """A sample of the worker's memory (``corral.worker.memory``): the process's RSS
    (with its placed results' pages not in it: ``corral.worker.process_memory``), the
    bytes of values held in memory, and whether the last write to disk failed."""

    rss: int
    managed: int
    spill_failed: bool = False


@dataclass(frozen=True, slots=True)
class Secede(Stimulus):
    """The running task ``key`` gives up its thread slot (``corral.secede()``): it goes on
    running, on a thread of its own, while the slot runs the next ready task."""

    key: Key


@dataclass(frozen=True, slots=True)
class Rejoin(Stimulus):
    """Seceded ``key`` wants a thread slot again (``corral.rejoin()``); its thread waits
    for ``Resume``."""

    key: Key


# -- instructions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class Execute(Instruction):
    """Run ``key`` on a free thread; its inputs are all in memory here."""

    key: Key


@dataclass(frozen=True, slots=True)
class Resume(Instruction):
    """The thread of seceded ``key``, waiting in ``rejoin()``, may go on: it holds a slot."""

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
    """A message for the scheduler's batched stream; ``may_wait``: it goes with the next
    write, or within the stream's interval, rather than in a write of its own."""

    msg: FromWorker
    may_wait: bool = False


@dataclass(frozen=True, slots=True)
class Spill(Instruction):
    """Write least recently used values to disk until ``target`` bytes are left in memory;
    with ``trim``, the process is over its spill threshold: hand memory freed but kept
    by the allocators back to the system too."""

    target: int
    trim: bool = False
