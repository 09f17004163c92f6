"""The scheduler state machine's vocabulary: stimuli in, actions out.

Every stimulus carries a ``stimulus_id`` (who or what caused it) and, where time
matters, the time it happened (``now``): the state machine never reads a clock.
Actions name who must be told what; the scheduler server turns them into messages on
its batched streams. User code and data never pass through here: a task's
``run_spec`` is opaque bytes that only a worker unpickles.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Annotated

from corral.core.validate import AtLeast

Key = Hashable  # str, or a tuple of str/int (dask's keys)
# Declared ranges, checked when a peer's message becomes a stimulus (corral.core.validate).
Count = Annotated[int, AtLeast(0)]
Amount = Annotated[float, AtLeast(0)]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task as a client submits it."""

    key: Key
    run_spec: bytes  # pickled (function, args, kwargs); opaque to the scheduler
    dependencies: tuple[Key, ...] = ()
    priority: int = 0  # user priority: higher runs first
    workers: tuple[str, ...] | None = None  # restrict to these worker addresses
    allow_other_workers: bool = False  # restrictions are a preference only
    retries: Count = 0
    resources: dict[str, Amount] | None = None
    name: str = ""  # function name, groups tasks for duration estimates


# -- stimuli ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stimulus:
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class UpdateGraph(Stimulus):
    """A client submits tasks and wants the keys in ``wanted``."""

    client: str
    tasks: tuple[TaskSpec, ...]
    wanted: tuple[Key, ...]
    now: float = 0.0
    report_start: bool = False  # also tell the client when each wanted task starts


@dataclass(frozen=True, slots=True)
class ClientReleasesKeys(Stimulus):
    """A client holds no more futures for these keys."""

    client: str
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class ClientDesiresKeys(Stimulus):
    """A client wants keys that already exist (e.g. a future unpickled in another client)."""

    client: str
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class CancelKeys(Stimulus):
    """A client cancels its futures for these keys.

    With ``unstarted_only``, a task that has started runs on; for one sent to a worker,
    that worker decides (``StealRequest``), and the client hears either way.
    """

    client: str
    keys: tuple[Key, ...]
    unstarted_only: bool = False


@dataclass(frozen=True, slots=True)
class RemoveClient(Stimulus):
    client: str


@dataclass(frozen=True, slots=True)
class ClientMissingData(Stimulus):
    """``client`` could not fetch ``key`` from ``errant_worker``, which was said to hold it."""

    client: str
    key: Key
    errant_worker: str


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
class TaskStarted(Stimulus):
    """A worker began executing ``key`` (it is to blame if the worker dies now)."""

    worker: str
    key: Key


@dataclass(frozen=True, slots=True)
class TaskFinished(Stimulus):
    """A worker computed ``key`` and holds its result."""

    worker: str
    key: Key
    nbytes: Count
    typename: str = ""
    start: float = 0.0
    stop: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskErred(Stimulus):
    """Running ``key`` on ``worker`` raised."""

    worker: str
    key: Key
    exception: bytes  # pickled exception, opaque here
    traceback: bytes  # pickled traceback (or b"")
    exception_text: str = ""
    traceback_text: str = ""
    start: float = 0.0
    stop: float = 0.0


@dataclass(frozen=True, slots=True)
class ScatterData(Stimulus):
    """A client placed data on workers directly: ``placed[key] = (worker, nbytes)``."""

    client: str
    placed: dict[Key, tuple[str, Count]]
    typenames: dict[Key, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AddKeys(Stimulus):
    """A worker holds (more) replicas of these keys: ``keys[key] = nbytes``."""

    worker: str
    keys: dict[Key, Count]


@dataclass(frozen=True, slots=True)
class MissingData(Stimulus):
    """``worker`` could not get ``key`` from ``errant_worker``, which was said to have it."""

    worker: str
    key: Key
    errant_worker: str


@dataclass(frozen=True, slots=True)
class ReleaseWorkerData(Stimulus):
    """A worker dropped its replica of ``key``."""

    worker: str
    key: Key


@dataclass(frozen=True, slots=True)
class StealResponse(Stimulus):
    """Answer to ``StealRequest``: ``released`` if the task had not started yet."""

    worker: str
    key: Key
    released: bool


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


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class ComputeTask(Action):
    """Tell ``worker`` to compute ``key``; its inputs are at ``who_has``."""

    worker: str
    key: Key
    run_spec: bytes
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, int]
    priority: tuple[float, ...]
    resources: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class FreeKeys(Action):
    """Tell ``worker`` to drop these keys (results, replicas, or queued tasks)."""

    worker: str
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class StealRequest(Action):
    """Ask ``worker`` to give back ``key`` if it has not started running it."""

    worker: str
    key: Key


@dataclass(frozen=True, slots=True)
class ReportKeyInMemory(Action):
    """Tell ``client`` that ``key`` is done and where its data lives."""

    client: str
    key: Key
    who_has: tuple[str, ...]
    nbytes: int
    typename: str = ""


@dataclass(frozen=True, slots=True)
class ReportTaskErred(Action):
    client: str
    key: Key
    exception: bytes
    traceback: bytes
    exception_text: str = ""
    traceback_text: str = ""


@dataclass(frozen=True, slots=True)
class Notice(Action):
    """Something an operator should read once in the log: a task erred, data was lost."""

    event: str  # "task-erred" or "key-lost"
    key: Key
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReportTaskStarted(Action):
    """Tell ``client``, which asked, that a worker began running ``key``."""

    client: str
    key: Key


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


@dataclass(frozen=True, slots=True)
class DropClient(Action):
    """``client`` is removed and its keys released (it said goodbye, or its grace ran
    out)."""

    client: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReportCancelled(Action):
    client: str
    key: Key
    reason: str = "cancelled"
