"""The worker's decisions, as a pure state machine: stimuli in, instructions out.

Theory of operation
-------------------
* A task assigned here is ``waiting`` (inputs missing) or ``ready``; ready tasks run in
  priority order on at most ``nthreads`` threads (``executing``), then sit in
  ``memory`` (or ``error``). A task that needs resources (``{"GPU": 1}``) runs only
  while that much of them is free; tasks behind it that fit go first. Inputs held
  elsewhere are ``fetch`` tasks: they move to ``flight`` while a transfer brings them,
  or ``missing`` once no holder is left. Copies the scheduler asks for
  (``AcquireReplicas``, from a retiring worker) are fetched the same way and kept.
* Transfers are batched per peer (up to ``transfer_message_target_bytes``), one per
  peer at a time and at most ``max_concurrent_transfers`` overall, inputs of the most
  urgent tasks first. A worker never fetches from itself.
* A task that calls ``corral.secede()`` turns ``long-running``: it goes on running, but
  gives its thread slot to the next ready task, and the scheduler stops counting it as
  load. ``corral.rejoin()`` asks for a slot back; the task's thread waits (``Resume``)
  until one is free, rejoining tasks before ready ones.
* Freeing a task that is executing marks it ``cancelled``: its result is dropped when it
  comes back. Inputs held only for freed tasks are released, and the scheduler told.
* Memory (``corral.worker.memory``): each ``MemoryUsage`` sample may ask for a
  ``Spill``; above the pause threshold the worker is ``paused``: it starts no task and
  fetches nothing (it still serves its data, and what runs finishes) until memory falls.
* No I/O, no clock; the server holds the data, runs the threads and the transfers.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from corral import messages as msgs
from corral.basic_types import Key
from corral.exceptions import InvalidTransition, UnknownStimulus
from corral.worker import events as ev
from corral.worker import memory


class WS(Enum):
    WAITING = "waiting"
    READY = "ready"
    EXECUTING = "executing"
    LONG_RUNNING = "long-running"  # seceded: running, but not in a thread slot
    CANCELLED = "cancelled"
    MEMORY = "memory"
    ERROR = "error"
    FETCH = "fetch"
    FLIGHT = "flight"
    MISSING = "missing"

    # Identity, in C: the default Enum hash is a Python call, paid on every transition.
    __hash__ = object.__hash__


TRANSITIONS: frozenset[tuple[WS, WS]] = frozenset({
    (WS.WAITING, WS.READY), (WS.READY, WS.EXECUTING), (WS.EXECUTING, WS.MEMORY),
    (WS.EXECUTING, WS.ERROR), (WS.EXECUTING, WS.CANCELLED),
    (WS.FETCH, WS.FLIGHT), (WS.FLIGHT, WS.MEMORY), (WS.FLIGHT, WS.FETCH),
    (WS.FLIGHT, WS.MISSING), (WS.FETCH, WS.MISSING), (WS.MISSING, WS.FETCH),
    (WS.FETCH, WS.MEMORY), (WS.MISSING, WS.MEMORY), (WS.WAITING, WS.MEMORY),
    (WS.READY, WS.MEMORY), (WS.CANCELLED, WS.EXECUTING),
    (WS.EXECUTING, WS.LONG_RUNNING), (WS.LONG_RUNNING, WS.EXECUTING),
    (WS.LONG_RUNNING, WS.MEMORY), (WS.LONG_RUNNING, WS.ERROR),
    (WS.LONG_RUNNING, WS.CANCELLED), (WS.CANCELLED, WS.LONG_RUNNING),
})  # fmt: skip
RUNNING = (WS.EXECUTING, WS.LONG_RUNNING)
NEEDS_INPUTS = (WS.WAITING, WS.READY, *RUNNING)


@dataclass(eq=False, slots=True)
class TaskState:
    key: Key
    state: WS
    run_spec: bytes | None = None
    dependencies: tuple[Key, ...] = ()
    function: bytes | None = None  # the pickled function, when not inside run_spec
    dependents: set[Key] = field(default_factory=set)  # tasks here that need this one
    priority: tuple[float, ...] = ()
    who_has: set[str] = field(default_factory=set)
    nbytes: int = 0
    assigned: bool = False  # the scheduler asked us to compute it (vs. an input only)
    replica: bool = False  # the scheduler asked us to hold a copy (``AcquireReplicas``)
    resources: dict[str, float] | None = None  # held while it executes
    inline_result: int = 0  # pickle the result for the scheduler up to this many bytes


class WorkerState:
    def __init__(
        self,
        address: str,
        nthreads: int,
        *,
        max_concurrent_transfers: int = 10,
        transfer_message_target_bytes: int = 50_000_000,
        log_length: int = 10_000,
        resources: dict[str, float] | None = None,
        memory_limit: int = 0,
        thresholds: memory.Thresholds | None = None,
    ) -> None:
        self.address = address
        self.memory_limit = memory_limit
        self.thresholds = thresholds or memory.Thresholds()
        self.paused = False  # over the pause threshold: start nothing, fetch nothing
        self.nthreads = nthreads
        self.total_resources = dict(resources or {})
        self.available_resources = dict(self.total_resources)
        self._held: dict[Key, dict[str, float]] = {}  # executing key → resources it holds
        self.max_concurrent_transfers = max_concurrent_transfers
        self.transfer_message_target_bytes = transfer_message_target_bytes
        self.tasks: dict[Key, TaskState] = {}
        self.executing: set[Key] = set()  # running in a thread slot (cancelled ones too)
        self.long_running: set[Key] = set()  # running, seceded from the slots
        self._rejoining: deque[Key] = deque()  # seceded tasks waiting for a slot, FIFO
        self.in_flight: dict[str, tuple[Key, ...]] = {}  # peer → keys being fetched
        self._ready: list[tuple[tuple[float, ...], int, Key]] = []
        self._fetch: list[tuple[tuple[float, ...], int, Key]] = []
        self._seq = itertools.count()
        self.log: deque[tuple[Key, str, str, str]] = deque(maxlen=log_length)
        self._out: list[ev.Instruction] = []
        self._sid = ""

    @property
    def executing_count(self) -> int:
        return len(self.executing)

    def handle(self, *stimuli: ev.Stimulus) -> list[ev.Instruction]:
        for stimulus in stimuli:
            self._sid = stimulus.stimulus_id
            handler = HANDLERS.get(type(stimulus))
            if handler is None:
                raise UnknownStimulus(f"no worker handler for {type(stimulus).__name__}: "
                                      f"{stimulus!r}")
            handler(self, stimulus)
        self._ensure_computing()
        self._ensure_communicating()
        out, self._out = self._out, []
        return out

    def _emit(self, kind: type[ev.Instruction], **fields: Any) -> None:
        self._out.append(kind(stimulus_id=self._sid, **fields))

    def _tell(self, kind: type[msgs.FromWorker], *, may_wait: bool = False,
              **fields: Any) -> None:
        """Tell the scheduler, naming the stimulus being handled as the cause
        (``may_wait``: with the next write, see ``ev.SendToScheduler``)."""
        self._emit(ev.SendToScheduler, msg=kind(stimulus_id=self._sid, **fields),
                   may_wait=may_wait)

    def _to(self, ts: TaskState, new: WS) -> None:
        if (ts.state, new) not in TRANSITIONS:
            raise InvalidTransition(f"{ts.key!r}: {ts.state.value} → {new.value}")
        self.log.append((ts.key, ts.state._value_, new._value_, self._sid))
        ts.state = new

    # -- assignments -------------------------------------------------------------------

    def _on_ComputeTask(self, s: ev.ComputeTask) -> None:
        ts = self.tasks.get(s.key)
        if ts is not None and ts.assigned:
            if ts.state == WS.MEMORY:
                self._tell(msgs.TaskFinished, key=ts.key, nbytes=ts.nbytes)
            return
        if ts is not None and ts.state == WS.MEMORY:  # held as someone's input already
            ts.assigned = True
            self._tell(msgs.TaskFinished, key=ts.key, nbytes=ts.nbytes)
            return
        if ts is not None and ts.state == WS.CANCELLED:  # wanted again while still running
            ts.assigned = True
            if s.key in self.long_running:
                self._to(ts, WS.LONG_RUNNING)
                self._tell(msgs.TaskSeceded, key=s.key)  # not load, here either
            else:
                self._to(ts, WS.EXECUTING)
            return
        dependents: set[Key] = set()
        if ts is not None:  # was an input being fetched; now we are to compute it
            dependents = ts.dependents
            self._forget(ts)
        ts = self.tasks[s.key] = TaskState(
            s.key, WS.WAITING, s.run_spec, tuple(s.who_has), priority=s.priority, assigned=True,
            resources=s.resources or None, function=s.function, inline_result=s.inline_result,
        )
        ts.dependents = dependents
        for dep in ts.dependencies:
            dts = self.tasks.get(dep)
            if dts is None:
                dts = self.tasks[dep] = TaskState(dep, WS.FETCH, nbytes=s.nbytes.get(dep, 0))
                dts.who_has = set(s.who_has.get(dep, ())) - {self.address}
                if not dts.who_has:
                    self._to(dts, WS.MISSING)
            elif dts.state in (WS.FETCH, WS.FLIGHT, WS.MISSING):
                dts.who_has |= set(s.who_has.get(dep, ())) - {self.address}
                if dts.state == WS.MISSING and dts.who_has:
                    self._to(dts, WS.FETCH)
            if dts.state == WS.MISSING:
                # Nobody to fetch it from (the scheduler named only us, who dropped it
                # meanwhile): say so, or the task waits here for good while the scheduler
                # believes it under way. The scheduler forgets our copy and sends the task
                # again with fresh holders, or recomputes the input.
                self._tell(msgs.MissingData, key=dep, errant_worker=self.address
                           if self.address in s.who_has.get(dep, ()) else "")
            dts.dependents.add(ts.key)
            if dts.state == WS.FETCH:
                heapq.heappush(self._fetch, (ts.priority, next(self._seq), dep))
        self._maybe_ready(ts)

    def _maybe_ready(self, ts: TaskState) -> None:
        if ts.state == WS.WAITING and all(
            self.tasks[d].state == WS.MEMORY for d in ts.dependencies
        ):
            self._to(ts, WS.READY)
            heapq.heappush(self._ready, (ts.priority, next(self._seq), ts.key))

    def _ensure_computing(self) -> None:
        while self._rejoining and len(self.executing) < self.nthreads:
            key = self._rejoining.popleft()
            self.long_running.remove(key)
            self.executing.add(key)
            rejoined = self.tasks[key]
            if rejoined.state == WS.LONG_RUNNING:
                self._to(rejoined, WS.EXECUTING)
                self._tell(msgs.TaskRejoined, key=key)
            self._emit(ev.Resume, key=key)
        waiting_for_resources = []
        while self._ready and len(self.executing) < self.nthreads and not self.paused:
            item = heapq.heappop(self._ready)
            key = item[2]
            ts = self.tasks.get(key)
            if ts is None or ts.state != WS.READY:
                continue  # freed or stolen meanwhile
            if not self._acquire(key, ts.resources):
                waiting_for_resources.append(item)
                continue
            self._to(ts, WS.EXECUTING)
            self.executing.add(key)
            self._emit(ev.Execute, key=key)
            # Whom to blame if we die now; it may wait for the next write, so a short task's
            # start rides with its result (one write and one scheduler turn fewer: a
            # quarter of a small task's latency). A death before it went out is blamed on
            # the tasks this worker would have been running (``worker_handlers.remove``).
            self._tell(msgs.TaskStarted, key=key, may_wait=True)
        for item in waiting_for_resources:
            heapq.heappush(self._ready, item)

    def _acquire(self, key: Key, needs: dict[str, float] | None) -> bool:
        if not needs:
            return True
        available = self.available_resources
        if any(available.get(r, 0) < n for r, n in needs.items()):
            return False
        for r, n in needs.items():
            available[r] -= n
        self._held[key] = needs
        return True

    def _ensure_communicating(self) -> None:
        deferred = []
        while (self._fetch and len(self.in_flight) < self.max_concurrent_transfers
               and not self.paused):
            item = heapq.heappop(self._fetch)
            ts = self.tasks.get(item[2])
            if ts is None or ts.state != WS.FETCH:
                continue
            free = sorted(p for p in ts.who_has if p not in self.in_flight)
            if not free:
                deferred.append(item)
                continue
            peer = free[0]
            keys, total = [ts.key], ts.nbytes
            for other in self.tasks.values():  # more inputs from the same peer, one request
                if total >= self.transfer_message_target_bytes:
                    break
                if other is not ts and other.state == WS.FETCH and peer in other.who_has:
                    keys.append(other.key)
                    total += other.nbytes
            for key in keys:
                self._to(self.tasks[key], WS.FLIGHT)
            self.in_flight[peer] = tuple(keys)
            self._emit(ev.GatherDep, peer=peer, keys=tuple(keys), total_nbytes=total)
        for item in deferred:
            heapq.heappush(self._fetch, item)

    # -- outcomes ----------------------------------------------------------------------

    def _on_ExecuteSuccess(self, s: ev.ExecuteSuccess) -> None:
        ts = self._finish_execution(s.key)
        if ts is None:
            return
        ts.nbytes = s.nbytes
        self._to(ts, WS.MEMORY)
        self._tell(msgs.TaskFinished, key=s.key, nbytes=s.nbytes, typename=s.typename,
                   start=s.start, stop=s.stop, pickled=s.pickled)
        self._inputs_done(ts)
        for dependent in list(ts.dependents):  # tasks here that waited for this one
            if dependent in self.tasks:
                self._maybe_ready(self.tasks[dependent])

    def _on_ExecuteFailure(self, s: ev.ExecuteFailure) -> None:
        ts = self._finish_execution(s.key)
        if ts is None:
            return
        self._to(ts, WS.ERROR)
        self._tell(msgs.TaskErred, key=s.key, exception=s.exception, traceback=s.traceback,
                   exception_text=s.exception_text, traceback_text=s.traceback_text,
                   start=s.start, stop=s.stop)
        self._inputs_done(ts)

    def _finish_execution(self, key: Key) -> TaskState | None:
        """The task's thread is free; None if its result is to be dropped."""
        self.executing.discard(key)
        self.long_running.discard(key)
        for r, n in self._held.pop(key, {}).items():
            self.available_resources[r] += n
        ts = self.tasks.get(key)
        if ts is None or ts.state == WS.CANCELLED:
            if ts is not None:
                self._forget(ts)
                self._inputs_done(ts)
            self._emit(ev.ReleaseData, keys=(key,))
            return None
        return ts if ts.state in RUNNING else None

    def _inputs_done(self, ts: TaskState) -> None:
        for dep in ts.dependencies:
            dts = self.tasks.get(dep)
            if dts is not None:
                dts.dependents.discard(ts.key)
                self._release_if_unneeded(dts)

    def _on_GatherDepSuccess(self, s: ev.GatherDepSuccess) -> None:
        requested = self.in_flight.pop(s.peer, ())
        arrived = {}
        for key, nbytes in s.data.items():
            ts = self.tasks.get(key)
            if ts is None:  # freed while in flight: drop it
                self._emit(ev.ReleaseData, keys=(key,))
                continue
            if ts.state not in (WS.FLIGHT, WS.FETCH, WS.MISSING):
                continue  # assigned here meanwhile: our own result will take its place
            if not ts.dependents and not ts.assigned and not ts.replica:
                self._emit(ev.ReleaseData, keys=(key,))
                self._forget(ts)
                continue
            ts.nbytes = nbytes
            self._to(ts, WS.MEMORY)
            arrived[key] = nbytes
            for dependent in list(ts.dependents):
                if dependent in self.tasks:
                    self._maybe_ready(self.tasks[dependent])
        if arrived:
            self._tell(msgs.AddKeys, keys=arrived)
        for key in requested:  # asked for but not in the answer: handled by GatherDepMissing
            ts = self.tasks.get(key)
            if ts is not None and ts.state == WS.FLIGHT and key not in s.data:
                self._to(ts, WS.FETCH)
                heapq.heappush(self._fetch, (self._urgency(ts), next(self._seq), key))

    def _on_GatherDepMissing(self, s: ev.GatherDepMissing) -> None:
        for key in s.keys:
            ts = self.tasks.get(key)
            if ts is not None:
                ts.who_has.discard(s.peer)
                self._tell(msgs.MissingData, key=key, errant_worker=s.peer)
                self._refetch(ts)

    def _on_GatherDepFailure(self, s: ev.GatherDepFailure) -> None:
        self.in_flight.pop(s.peer, None)
        for key in s.keys:
            if key in self.tasks:
                self._tell(msgs.MissingData, key=key, errant_worker=s.peer)
        self._drop_peer(s.peer, told=s.keys)

    def _on_RemoveWorkerPeer(self, s: ev.RemoveWorkerPeer) -> None:
        self._drop_peer(s.peer)

    def _drop_peer(self, peer: str, told: tuple[Key, ...] = ()) -> None:
        for ts in list(self.tasks.values()):
            if peer in ts.who_has:
                ts.who_has.discard(peer)
                was = ts.state
                self._refetch(ts)
                if ts.state == WS.MISSING and was != WS.MISSING and ts.key not in told:
                    # Its last known holder is gone: without a word the scheduler (which
                    # may know of other copies, made since it sent us the task) would
                    # wait for a task that waits here for good.
                    self._tell(msgs.MissingData, key=ts.key, errant_worker=peer)

    def _refetch(self, ts: TaskState) -> None:
        if ts.state not in (WS.FETCH, WS.FLIGHT, WS.MISSING):
            return
        if ts.state == WS.FLIGHT and any(ts.key in keys for keys in self.in_flight.values()):
            return  # still in a live transfer from another peer
        if ts.who_has:
            if ts.state != WS.FETCH:
                self._to(ts, WS.FETCH)
            heapq.heappush(self._fetch, (self._urgency(ts), next(self._seq), ts.key))
        elif ts.state != WS.MISSING:
            self._to(ts, WS.MISSING)

    def _urgency(self, ts: TaskState) -> tuple[float, ...]:
        priorities = [self.tasks[d].priority for d in ts.dependents if d in self.tasks]
        return min(priorities, default=ts.priority)

    # -- data put here, freeing, stealing ------------------------------------------------

    def _on_UpdateData(self, s: ev.UpdateData) -> None:
        for key, nbytes in s.data.items():
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = TaskState(key, WS.MEMORY, nbytes=nbytes, assigned=True)
            elif ts.state in (WS.FETCH, WS.FLIGHT, WS.MISSING, WS.WAITING, WS.READY):
                self._to(ts, WS.MEMORY)
            ts.nbytes, ts.assigned = nbytes, True
            for dependent in list(ts.dependents):
                if dependent in self.tasks:
                    self._maybe_ready(self.tasks[dependent])
        if s.report:
            self._tell(msgs.AddKeys, keys=dict(s.data))

    def _on_AcquireReplicas(self, s: ev.AcquireReplicas) -> None:
        """Hold a copy of each key: fetch the ones not here, keep them until freed."""
        held = {}
        for key, holders in s.who_has.items():
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = TaskState(key, WS.FETCH, priority=s.priority,
                                                 nbytes=s.nbytes.get(key, 0))
            ts.replica = True
            if ts.state == WS.MEMORY:
                held[key] = ts.nbytes
            elif ts.state in (WS.FETCH, WS.FLIGHT, WS.MISSING):
                ts.who_has |= set(holders) - {self.address}
                self._refetch(ts)
        if held:
            self._tell(msgs.AddKeys, keys=held)

    def _on_FreeKeys(self, s: ev.FreeKeys) -> None:
        for key in s.keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.assigned = ts.replica = False
            if ts.state in RUNNING:
                self._to(ts, WS.CANCELLED)
            elif ts.state in (WS.WAITING, WS.READY, WS.ERROR):
                self._forget(ts)
                self._inputs_done(ts)
            elif ts.state == WS.MEMORY and not ts.dependents:
                self._forget(ts)
                self._emit(ev.ReleaseData, keys=(key,))
            elif ts.state in (WS.FETCH, WS.MISSING) and not ts.dependents:
                self._forget(ts)  # a replica no longer wanted (one in flight: when it lands)

    def _on_Secede(self, s: ev.Secede) -> None:
        if s.key not in self.executing:
            return  # seceded already, or not running here (any more)
        self.executing.remove(s.key)
        self.long_running.add(s.key)
        ts = self.tasks[s.key]
        if ts.state == WS.EXECUTING:  # a cancelled task is nobody's load already
            self._to(ts, WS.LONG_RUNNING)
            self._tell(msgs.TaskSeceded, key=s.key)

    def _on_Rejoin(self, s: ev.Rejoin) -> None:
        if s.key in self.long_running and s.key not in self._rejoining:
            self._rejoining.append(s.key)
        elif s.key not in self.long_running:
            self._emit(ev.Resume, key=s.key)  # never seceded: nothing to wait for

    def _on_StealRequest(self, s: ev.StealRequest) -> None:
        # Start first what free threads would start anyway: a task that arrived in the same
        # batch as the request is not "unstarted" just because the batch is not done yet
        # (shutdown(cancel_futures=True) right after submitting would cancel every call).
        self._ensure_computing()
        ts = self.tasks.get(s.key)
        released = ts is not None and ts.state in (WS.WAITING, WS.READY)
        if released:
            assert ts is not None
            self._forget(ts)
            self._inputs_done(ts)
        self._tell(msgs.StealResponse, key=s.key, released=released)

    def _release_if_unneeded(self, ts: TaskState) -> None:
        """An input nobody here needs any more, that we were not asked to compute or
        keep."""
        if ts.dependents or ts.assigned or ts.replica:
            return
        if ts.state == WS.MEMORY:
            self._emit(ev.ReleaseData, keys=(ts.key,))
            self._tell(msgs.ReleaseWorkerData, key=ts.key)
        if ts.state != WS.FLIGHT:  # a transfer in flight is dropped when it lands
            self._forget(ts)

    def _forget(self, ts: TaskState) -> None:
        if self.tasks.get(ts.key) is ts:
            del self.tasks[ts.key]
        self.log.append((ts.key, ts.state._value_, "forgotten", self._sid))

    # -- introspection ---------------------------------------------------------------------

    def story(self, key: Key) -> list[tuple[Key, str, str, str]]:
        return [entry for entry in self.log if entry[0] == key]

    def validate(self) -> None:
        assert len(self.executing) <= self.nthreads
        assert not self.executing & self.long_running
        assert set(self._rejoining) <= self.long_running
        assert self._held.keys() <= self.executing | self.long_running
        for r, total in self.total_resources.items():
            held = sum(needs.get(r, 0) for needs in self._held.values())
            assert abs(self.available_resources[r] + held - total) < 1e-9, r
        for key in self.executing:
            assert self.tasks[key].state in (WS.EXECUTING, WS.CANCELLED), key
        for key in self.long_running:
            assert self.tasks[key].state in (WS.LONG_RUNNING, WS.CANCELLED), key
        for key, ts in self.tasks.items():
            assert ts.key == key
            assert self.address not in ts.who_has, key
            if ts.state in NEEDS_INPUTS and ts.state != WS.WAITING:
                for dep in ts.dependencies:
                    assert self.tasks[dep].state == WS.MEMORY, (key, dep)
            for dependent in ts.dependents:
                assert dependent in self.tasks, (key, dependent)
        for peer in self.in_flight:  # its keys may since have been assigned here
            assert peer != self.address


# Every stimulus the worker state machine takes, and its handler.
HANDLERS: dict[type[ev.Stimulus], Callable[[WorkerState, Any], None]] = {
    ev.ComputeTask: WorkerState._on_ComputeTask,
    ev.FreeKeys: WorkerState._on_FreeKeys,
    ev.StealRequest: WorkerState._on_StealRequest,
    ev.AcquireReplicas: WorkerState._on_AcquireReplicas,
    ev.Secede: WorkerState._on_Secede,
    ev.Rejoin: WorkerState._on_Rejoin,
    ev.RemoveWorkerPeer: WorkerState._on_RemoveWorkerPeer,
    ev.AcquireReplicas: WorkerState._on_AcquireReplicas,
    ev.UpdateData: WorkerState._on_UpdateData,
    ev.ExecuteSuccess: WorkerState._on_ExecuteSuccess,
    ev.ExecuteFailure: WorkerState._on_ExecuteFailure,
    ev.GatherDepSuccess: WorkerState._on_GatherDepSuccess,
    ev.GatherDepMissing: WorkerState._on_GatherDepMissing,
    ev.GatherDepFailure: WorkerState._on_GatherDepFailure,
    ev.MemoryUsage: memory.on_memory_usage,
}
