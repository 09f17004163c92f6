"""The one vocabulary of the scheduler's streams: every message, defined once.

Rules
-----
* A message is a frozen dataclass with an ``op`` (its name on the wire) and its fields.
  ``to_wire()`` gives the dict that travels (``{"op": ..., field: value, ...}``);
  ``from_wire(msg, ...)`` checks an incoming dict against the declared fields
  (``corral.core.validate``) and refuses a malformed one whole, with ``InvalidMessage``.
* The direction is the base class: ``ToWorker`` and ``ToClient`` messages are sent by
  the scheduler, ``FromWorker`` and ``FromClient`` ones received by it. The peer at the
  other end (``worker`` or ``client``) is a field of the object but never of the wire
  form: the sender addresses the stream, and the scheduler learns the sender from the
  stream it arrived on, never from the message. Fields in ``local_fields`` are set by
  the receiver; a peer that sends one is refused.
* The same objects are the state machines' vocabulary: a ``ComputeTask`` is the
  scheduler's action, the message on the wire and the worker's stimulus; a
  ``TaskFinished`` is what the worker's state machine tells the scheduler and the
  scheduler's stimulus. The role markers (``SchedulerStimulus``, ``SchedulerAction``,
  ``WorkerStimulus``, and ``CoordinationStimulus``/``CoordinationAction`` for the
  scheduler's locks, queues and variables) say which. Stimuli that never travel (a
  worker joining, a thread's outcome) are declared next to their state machine, on the
  same markers.
* Every message carries a ``stimulus_id``: ``<origin>-<n>`` (``StimulusIds``), made by
  whoever caused it and kept by what follows from it, so a log can say why. Older
  peers send none: the receiver makes one.

The wire form is the one peers have always spoken: same op names, same field names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.basic_types import Amount, Count, Key
from corral.exceptions import InvalidMessage

# The bases (roles, directions, ids) and the coordination messages have modules of
# their own; every name stays importable from here.
from corral.messages.base import *
from corral.messages.coordination import *

# -- scheduler → worker -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ComputeTask(ToWorker, SchedulerAction, WorkerStimulus):
    """Compute ``key``; its inputs not held there are at ``who_has``."""

    op = "compute-task"
    key: Key
    run_spec: bytes  # pickled (function, args, kwargs), or (args, kwargs) with ``function``
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, int]
    priority: tuple[float, ...]
    resources: dict[str, float] | None = None
    function: bytes | None = None  # the pickled function, when not inside ``run_spec``
    # A client waits for the result: send it pickled with ``TaskFinished`` if it pickles
    # to at most this many bytes (0: never).
    inline_result: Count = 0

    def to_wire(self) -> dict[str, Any]:
        msg = Message.to_wire(self)
        if self.function is None:
            del msg["function"]  # what workers before shared functions read
        if not self.inline_result:
            del msg["inline_result"]
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class FreeKeys(ToWorker, SchedulerAction, WorkerStimulus):
    """Drop these keys (results, replicas, queued tasks) unless still needed there."""

    op = "free-keys"
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StealRequest(ToWorker, SchedulerAction, WorkerStimulus):
    """Give back ``key`` if it has not started running (answered by ``StealResponse``)."""

    op = "steal-request"
    key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class AcquireReplicas(ToWorker, SchedulerAction, WorkerStimulus):
    """Fetch a copy of each of these keys from its holders (``who_has``) and keep it
    until freed: a second replica, so that one death loses no long lineage
    (``corral.scheduler.checkpoints``), or so that a retiring worker's only copies
    survive it. Answered by ``AddKeys``."""

    op = "acquire-replicas"
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, Count]
    priority: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveWorkerPeer(ToWorker, WorkerStimulus):
    """``peer`` is gone: forget it as a source of data."""

    op = "remove-worker-peer"
    peer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseWorker(ToWorker, SchedulerAction):
    """Close gracefully and exit with success (a nanny does not restart it): every key
    it held is safe elsewhere, and the scheduler has already forgotten it."""

    op = "close-worker"
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AddWorkerPlugin(ToWorker):
    """Set up this worker plugin (pickled by a client, opaque to the scheduler)."""

    op = "plugin-add"
    name: str
    plugin: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatAck(ToWorker):
    """The answer to ``Heartbeat``: proves the link both ways."""

    op = "heartbeat-ack"


# -- worker → scheduler -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStarted(FromWorker, SchedulerStimulus):
    """The worker began executing ``key`` (it is to blame if the worker dies now)."""

    op = "task-started"
    key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSeceded(FromWorker, SchedulerStimulus):
    """``key`` left its thread slot (``corral.secede()``): it runs on, waiting for tasks it
    launched, but no longer counts as the worker's load."""

    op = "task-seceded"
    key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRejoined(FromWorker, SchedulerStimulus):
    """Seceded ``key`` has a thread slot again (``corral.rejoin()``): load once more."""

    op = "task-rejoined"
    key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFinished(FromWorker, SchedulerStimulus):
    """The worker computed ``key`` and holds its result."""

    op = "task-finished"
    key: Key
    nbytes: Count
    typename: str = ""
    start: float = 0.0
    stop: float = 0.0
    pickled: bytes | None = None  # the result, when small and asked for: opaque here


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskErred(FromWorker, SchedulerStimulus):
    """Running ``key`` raised."""

    op = "task-erred"
    key: Key
    exception: bytes  # pickled exception, opaque to the scheduler
    traceback: bytes  # pickled traceback (or b"")
    exception_text: str = ""
    traceback_text: str = ""
    start: float = 0.0
    stop: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AddKeys(FromWorker, SchedulerStimulus):
    """The worker holds (more) replicas of these keys: ``keys[key] = nbytes``."""

    op = "add-keys"
    keys: dict[Key, Count]


@dataclass(frozen=True, slots=True, kw_only=True)
class MissingData(FromWorker, SchedulerStimulus):
    """The worker could not get ``key`` from ``errant_worker``, said to have it."""

    op = "missing-data"
    key: Key
    errant_worker: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseWorkerData(FromWorker, SchedulerStimulus):
    """The worker dropped its replica of ``key``."""

    op = "release-worker-data"
    key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class StealResponse(FromWorker, SchedulerStimulus):
    """Answer to ``StealRequest``: ``released`` if the task had not started yet."""

    op = "steal-response"
    key: Key
    released: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RetireMe(FromWorker, SchedulerStimulus):
    """The worker asks to be retired (its ``--lifetime`` is over): move its data to
    others, then close it (``CloseWorker``)."""

    op = "retire-me"
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerPaused(FromWorker, SchedulerStimulus):
    """The worker's memory is over its pause threshold (``paused``), or back under it:
    it starts no new task while paused, but serves its data and finishes what runs."""

    op = "worker-paused"
    paused: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(FromWorker):
    """A worker's periodic sign of life: its metrics, and the transfers it made since.

    Memory, in bytes: ``managed`` (values of its keys held in memory), ``spilled`` (their
    size in memory, of those written to disk), ``unmanaged`` (the rest of the process's
    RSS); ``paused`` as last said by ``WorkerPaused``."""

    op = "heartbeat"
    metrics: dict[str, Any] = field(default_factory=dict)
    managed: Count = 0
    spilled: Count = 0
    spilled_disk: Count = 0  # bytes of those files on disk (compressed where it paid)
    unmanaged: Count = 0
    paused: bool = False
    transfers: tuple[tuple[str, float, float, Count], ...] = ()  # (peer, start, stop, nbytes)


# -- scheduler → client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportKeyInMemory(ToClient, SchedulerAction):
    """``key`` is done; its data lives on ``who_has``."""

    op = "key-in-memory"
    key: Key
    who_has: tuple[str, ...]
    nbytes: int
    typename: str = ""
    pickled: bytes | None = None  # the worker's pickled result, relayed unread


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportTaskErred(ToClient, SchedulerAction):
    op = "task-erred"
    key: Key
    exception: bytes
    traceback: bytes
    exception_text: str = ""
    traceback_text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportTaskStarted(ToClient, SchedulerAction):
    """A worker began running ``key`` (sent to clients that asked)."""

    op = "task-started"
    key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportCancelled(ToClient, SchedulerAction):
    op = "cancelled"
    key: Key
    reason: str = "cancelled"


# -- client → scheduler -------------------------------------------------------------------


@dataclass(slots=True)
class TaskSpec:
    """A task as a client submits it. Never changed once built; not frozen because a graph
    may hold a million of them, made on the client and again on the scheduler, and a
    frozen dataclass takes about four times as long to build."""

    key: Key
    run_spec: bytes  # pickled (function, args, kwargs), or (args, kwargs): see ``function``
    dependencies: tuple[Key, ...] = ()
    priority: int = 0  # user priority: higher runs first
    workers: tuple[str, ...] | None = None  # restrict to these worker addresses
    allow_other_workers: bool = False  # restrictions are a preference only
    retries: Count = 0
    resources: dict[str, Amount] | None = None
    name: str = ""  # function name, groups tasks for duration estimates
    # The position of the pickled function in the graph's ``functions``, sent once for
    # all the tasks of a ``map``; -1: ``run_spec`` holds the function itself.
    function: int = -1

    def to_wire(self) -> dict[str, Any]:
        # Spelled out: three times as fast as a loop over the fields, for a million tasks
        # (a test checks that every field is here). Options left at their defaults are
        # left out: the receiver fills them in, and the graph is smaller on the wire and
        # while the scheduler reads it.
        msg: dict[str, Any] = {"key": self.key, "run_spec": self.run_spec,
                               "dependencies": self.dependencies, "name": self.name}
        if self.priority:
            msg["priority"] = self.priority
        if self.workers is not None:
            msg["workers"] = self.workers
        if self.allow_other_workers:
            msg["allow_other_workers"] = self.allow_other_workers
        if self.retries:
            msg["retries"] = self.retries
        if self.resources is not None:
            msg["resources"] = self.resources
        if self.function >= 0:
            msg["function"] = self.function
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateGraph(FromClient, SchedulerStimulus):
    """The client submits tasks and wants the keys in ``wanted``."""

    op = "update-graph"
    local_fields = frozenset({"client", "now"})
    tasks: tuple[TaskSpec, ...]
    wanted: tuple[Key, ...]
    report_start: bool = False  # also tell the client when each wanted task starts
    now: float = 0.0  # when the scheduler received it
    functions: tuple[bytes, ...] = ()  # pickled functions the tasks name by position

    def check(self) -> None:
        """Refuse a task that names a function the graph does not carry."""
        count = len(self.functions)
        for spec in self.tasks:
            if not -1 <= spec.function < count:
                raise InvalidMessage(f"update-graph: task {spec.key!r} names function "
                                     f"{spec.function} of {count}")

    def to_wire(self) -> dict[str, Any]:
        msg = Message.to_wire(self)
        msg["tasks"] = [spec.to_wire() for spec in self.tasks]
        if not self.functions:
            del msg["functions"]  # what schedulers before shared functions read
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientReleasesKeys(FromClient, SchedulerStimulus):
    """The client holds no more futures for these keys."""

    op = "client-releases-keys"
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDesiresKeys(FromClient, SchedulerStimulus):
    """The client wants keys that already exist (e.g. a future unpickled in another client,
    or the results it may have missed while reconnecting)."""

    op = "client-desires-keys"
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryKeys(FromClient, SchedulerStimulus):
    """Run these erred keys again, with the erred inputs they need (``Future.retry``)."""

    op = "retry-keys"
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FireAndForget(FromClient, SchedulerStimulus):
    """Run these keys to the end even if no client wants them any more
    (``fire_and_forget``); their results are freed once done, unless someone wants them."""

    op = "fire-and-forget"
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelKeys(FromClient, SchedulerStimulus):
    """The client cancels its futures for these keys.

    With ``unstarted_only``, a task that has started runs on; for one sent to a worker,
    that worker decides (``StealRequest``), and the client hears either way.
    """

    op = "cancel-keys"
    keys: tuple[Key, ...]
    unstarted_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientMissingData(FromClient, SchedulerStimulus):
    """The client could not fetch ``key`` from ``errant_worker``, said to hold it."""

    op = "missing-data"
    key: Key
    errant_worker: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Scatter(FromClient):
    """The client put data on workers itself: ``placed[key] = (holders, nbytes)``."""

    op = "scatter-data"
    placed: dict[Key, tuple[tuple[str, ...], Count]]


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseClient(FromClient):
    """The client is closing: release its keys now, not after a grace period."""

    op = "close-client"


# -- reading ------------------------------------------------------------------------------


def _table(*classes: type[M]) -> dict[str, type[M]]:
    table = {cls.op: cls for cls in classes}
    assert len(table) == len(classes), "two messages of one direction share an op"
    return table


TO_WORKER: dict[str, type[ToWorker]] = _table(
    ComputeTask, FreeKeys, StealRequest, RemoveWorkerPeer, AcquireReplicas, CloseWorker,
    HeartbeatAck, AddWorkerPlugin)
FROM_WORKER: dict[str, type[FromWorker]] = _table(
    TaskStarted, TaskFinished, TaskErred, AddKeys, MissingData, ReleaseWorkerData,
    StealResponse, RetireMe, WorkerPaused, Heartbeat, TaskSeceded, TaskRejoined)
TO_CLIENT: dict[str, type[ToClient]] = _table(
    ReportKeyInMemory, ReportTaskErred, ReportTaskStarted, ReportCancelled,
    CoordinationReply)
FROM_CLIENT: dict[str, type[FromClient]] = _table(
    UpdateGraph, ClientReleasesKeys, ClientDesiresKeys, CancelKeys, ClientMissingData,
    Scatter, CloseClient, AcquireLease, ReleaseLease, SetEvent, WaitEvent, SetVariable,
    GetVariable, PutQueue, GetQueue, PublishDataset, GetDataset, UnpublishDataset, Inspect,
    CancelWait, RefreshLeases, RetryKeys, FireAndForget)


def read(table: Mapping[str, type[M]], msg: Any, new_id: Callable[[], str],
         **local: Any) -> M:
    """The message of ``table`` that ``msg`` (a dict off the wire) is; ``new_id()`` names
    it if its sender gave no ``stimulus_id``. Raises ``InvalidMessage``."""
    if not isinstance(msg, dict):
        raise InvalidMessage(f"expected a message (a mapping), got {type(msg).__name__}")
    op = msg.get("op")
    cls = table.get(op) if isinstance(op, str) else None
    if cls is None:
        raise InvalidMessage(f"unknown op {op!r}")
    if "stimulus_id" not in msg:
        local["stimulus_id"] = new_id()
    return cls.from_wire(msg, **local)
