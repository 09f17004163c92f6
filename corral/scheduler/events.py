"""The scheduler state machine's vocabulary: stimuli in, actions out.

Every stimulus carries a ``stimulus_id`` (who or what caused it) and, where time
matters, the time it happened (``now``): the state machine never reads a clock.
Actions name who must be told what; the scheduler server sends each to its destination
on its batched streams. The stimuli and actions that travel (a worker's ``TaskFinished``,
a ``ComputeTask`` for a worker, a client's ``UpdateGraph``, ...) are the messages of
``corral.messages``, re-exported here; those declared here never leave the scheduler.
User code and data never pass through here: a task's ``run_spec`` is opaque bytes that
only a worker unpickles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from corral.basic_types import Amount, AtLeast, Count, Key
from corral.messages import (
    AcquireReplicas,
    AddKeys,
    CancelKeys,
    ClientDesiresKeys,
    ClientMissingData,
    ClientReleasesKeys,
    CloseWorker,
    ComputeTask,
    FireAndForget,
    FreeKeys,
    MissingData,
    ReleaseWorkerData,
    ReportCancelled,
    ReportKeyInMemory,
    ReportTaskErred,
    ReportTaskStarted,
    RetireMe,
    RetryKeys,
    StealRequest,
    StealResponse,
    TaskErred,
    TaskFinished,
    TaskRejoined,
    TaskSeceded,
    TaskSpec,
    TaskStarted,
    UpdateGraph,
    WorkerPaused,
)
from corral.messages import SchedulerAction as Action
from corral.messages import SchedulerStimulus as Stimulus

__all__ = [
    "SERVER_ACTIONS", "AcquireReplicas", "Action", "AddKeys", "AddWorker", "Amount",
    "CancelKeys", "ClientConnected", "ClientDesiresKeys", "ClientDisconnected",
    "ClientMissingData", "ClientReleasesKeys", "CloseWorker", "ComputeTask", "Count",
    "DropClient", "DropWorker", "FireAndForget", "FreeKeys", "Key", "MissingData", "Notice",
    "RecordTaskRun", "ReleaseWorkerData", "RemoveClient", "RemoveWorker", "Replicate",
    "ReportCancelled", "ReportKeyInMemory", "ReportTaskErred", "ReportTaskStarted", "RetireMe",
    "RetireWorkers", "RetirementRefused", "RetryKeys", "ScatterData", "StealRequest",
    "StealResponse", "Stimulus", "TaskErred", "TaskFinished", "TaskRejoined", "TaskSeceded",
    "TaskSpec", "TaskStarted", "Tick", "UpdateGraph", "WorkerHeartbeat", "WorkerPaused",
]


# -- stimuli that never travel ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoveClient(Stimulus):
    client: str


@dataclass(frozen=True, slots=True)
class AddWorker(Stimulus):
    address: str
    nthreads: Annotated[int, AtLeast(1)]
    memory_limit: Count = 0
    resources: dict[str, Amount] = field(default_factory=dict)
    name: str = ""
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class RemoveWorker(Stimulus):
    address: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetireWorkers(Stimulus):
    """Retire these workers gracefully: no new tasks go to them, every key only they
    hold is copied to another worker, and then each is closed (``CloseWorker``) and
    forgotten. ``workers`` are addresses, names or host names."""

    workers: tuple[str, ...]
    reason: str = "retired"


@dataclass(frozen=True, slots=True)
class Replicate(Stimulus):
    """Have ``n`` of ``workers`` (addresses; none: any; n 0: all of them) hold each of
    ``keys`` that is in memory (``corral.scheduler.replication``)."""

    keys: tuple[Key, ...]
    n: int = 0
    workers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScatterData(Stimulus):
    """A client placed data on workers directly: ``placed[key] = (worker, nbytes)``."""

    client: str
    placed: dict[Key, tuple[str, Count]]
    typenames: dict[Key, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tick(Stimulus):
    """Periodic: time passes. Silent workers and clients gone past their grace are
    removed, and idle workers steal."""

    now: float


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat(Stimulus):
    """``worker`` was heard from at ``now``: it is alive for another ``worker_ttl``."""

    worker: str
    now: float


@dataclass(frozen=True, slots=True)
class ClientConnected(Stimulus):
    """``client`` (re)connected at ``now``: if it had dropped off, its keys are kept."""

    client: str
    now: float


@dataclass(frozen=True, slots=True)
class ClientDisconnected(Stimulus):
    """``client``'s connection dropped at ``now`` without a goodbye: its keys are
    released at ``now + client_grace`` unless it reconnects first."""

    client: str
    now: float


# -- actions that never travel ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice(Action):
    """Something an operator should read once in the log: a task erred, data was lost."""

    event: str  # "task-erred" or "key-lost"
    key: Key
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RecordTaskRun(Action):
    """``worker`` ran ``key`` (function ``name``) from ``start`` to ``stop``, by its
    clock: one bar of the task stream, whatever became of the result."""

    worker: str
    key: Key
    name: str
    start: float
    stop: float
    nbytes: int = 0
    erred: bool = False


@dataclass(frozen=True, slots=True)
class DropWorker(Action):
    """``worker`` is removed (gone silent, disconnected, or replaced): close its stream
    and tell its peers. Its tasks have already been rescheduled."""

    worker: str
    reason: str = ""
    graceful: bool = False  # retired: send what is queued for it (``CloseWorker``) first


@dataclass(frozen=True, slots=True)
class DropClient(Action):
    """``client`` is removed and its keys released (it said goodbye, or its grace ran
    out)."""

    client: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetirementRefused(Action):
    """``worker`` cannot be retired without losing data (no other worker can take it):
    it stays, and serves as before."""

    worker: str
    reason: str = ""


# What the scheduler server carries out itself (logs, the task stream, its streams).
SERVER_ACTIONS: tuple[type[Action], ...] = (Notice, RecordTaskRun, DropWorker, DropClient,
                                            RetirementRefused)
