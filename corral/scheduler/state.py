"""The scheduler's decisions, as a pure state machine: stimuli in, actions out.

Theory of operation
-------------------
* A task is ``released`` (known, nothing under way), ``waiting`` (for inputs),
  ``no-worker`` (ready, but no allowed worker exists), ``processing`` (sent to one
  worker), ``memory`` (held by one or more workers) or ``erred``; *forgotten* tasks are
  deleted. Legal moves are the ``TRANSITIONS`` table; anything else raises.
* A task is *needed* while a client wants it or a dependent still has to run. A task
  that is not needed is released (its data freed on every holder), and forgotten once
  no task depends on it any more. Released tasks keep their ``run_spec`` while they have
  dependents: that is the lineage used to recompute lost data.
* Placement: a ready task goes to the worker with the smallest estimated start time,
  ``occupancy / nthreads + bytes of inputs it lacks / bandwidth``. Only the holders of
  its inputs and the least-occupied worker (a lazily updated heap) are considered, so
  placing a task costs O(inputs + log workers), not O(workers).
* Every task ready on a worker is sent at once, with a priority the worker honours:
  ``(-user priority, submission generation, depth-first order)``, so dependents finish
  before new roots start. On each ``Tick`` idle workers steal the last-to-run tasks
  of busy ones when moving their inputs costs less than waiting.
* No I/O and no clock: time comes in the stimuli. Every stimulus is logged with its id,
  and ``story(key)`` tells a key's history.
"""

from __future__ import annotations

import heapq
import itertools
import pickle
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from typing import Any

from corral.exceptions import DataLostError, InvalidTransition, KilledWorker
from corral.scheduler import events as ev
from corral.scheduler.events import Key
from corral.scheduler.records import (
    ACTIVE,
    NONE,
    TRANSITIONS,
    TS,
    TaskState,
    WorkerState,
    added,
    discarded,
)

# Seconds, for functions never seen to finish. Small, so that until we know better a
# task follows its data; stealing spreads the work once durations are measured.
DEFAULT_DURATION = 0.01


class SchedulerState:
    def __init__(
        self,
        *,
        bandwidth: float = 100e6,
        default_duration: float = DEFAULT_DURATION,
        allowed_failures: int = 3,
        max_steals_in_flight: int = 100,
        log_length: int = 100_000,
    ) -> None:
        self.bandwidth = bandwidth
        self.default_duration = default_duration
        self.allowed_failures = allowed_failures
        self.max_steals_in_flight = max_steals_in_flight
        self.tasks: dict[Key, TaskState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.client_keys: dict[str, set[TaskState]] = defaultdict(set)
        self.log: deque[tuple[Key, str, str, str]] = deque(maxlen=log_length)
        # Tasks per (function name, state), released ones left out: kept as tasks move so
        # that the dashboard and /metrics never walk every task to count them.
        self.counts: dict[tuple[str, TS], int] = {}
        self._durations: dict[str, tuple[float, int]] = {}
        self._generation = 0
        self._load_heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._steals: dict[Key, str] = {}  # key → intended thief
        self._pending_compute: list[TaskState] = []  # released tasks to bring back, later
        # Clients to tell when a task starts (an Executor's calls turn "running"): kept
        # apart from TaskState so that ordinary tasks pay nothing for it.
        self._start_watchers: dict[Key, set[str]] = {}
        self._cancel_requests: dict[Key, set[str]] = {}  # cancel unless started: asked
        self._actions: list[ev.Action] = []
        self._stimulus_id = ""

    # -- entry point -------------------------------------------------------------------

    def handle(self, *stimuli: ev.Stimulus) -> list[ev.Action]:
        for stimulus in stimuli:
            self._stimulus_id = stimulus.stimulus_id
            handler = getattr(self, "_on_" + type(stimulus).__name__, None)
            if handler is None:
                raise TypeError(f"unknown stimulus {stimulus!r}")
            handler(stimulus)
        actions, self._actions = self._actions, []
        return actions

    def _emit(self, action_type: type[ev.Action], **fields: Any) -> None:
        self._actions.append(action_type(stimulus_id=self._stimulus_id, **fields))

    def _transition(self, ts: TaskState, new: TS) -> None:
        if (ts.state, new) not in TRANSITIONS:
            raise InvalidTransition(f"{ts.key!r}: {ts.state.value} → {new.value}")
        self.log.append((ts.key, ts.state.value, new.value, self._stimulus_id))
        counts = self.counts
        if ts.state != TS.RELEASED:  # tasks are born and forgotten released: never counted
            old = (ts.name, ts.state)
            if counts[old] == 1:
                del counts[old]
            else:
                counts[old] -= 1
        if new != TS.RELEASED:
            counts[ts.name, new] = counts.get((ts.name, new), 0) + 1
        ts.state = new
        if new in (TS.MEMORY, TS.ERRED) and self._start_watchers:
            self._start_watchers.pop(ts.key, None)  # done without a start report: none due

    # -- clients ----------------------------------------------------------------------

    def _on_UpdateGraph(self, s: ev.UpdateGraph) -> None:
        fresh: list[TaskState] = []
        for spec in s.tasks:
            ts = self.tasks.get(spec.key)
            if ts is None:
                ts = self.tasks[spec.key] = TaskState(spec.key)
            if ts.state != TS.RELEASED:
                continue  # an equal pure call under way or done: share it
            ts.run_spec, ts.name, ts.retries = spec.run_spec, spec.name, spec.retries
            ts.restrictions = frozenset(spec.workers) if spec.workers is not None else None
            ts.loose_restrictions, ts.resources = spec.allow_other_workers, spec.resources
            ts.priority = (-spec.priority,)
            fresh.append(ts)
        missing: dict[TaskState, Key] = {}
        for spec in s.tasks:
            ts = self.tasks[spec.key]
            for dep_key in spec.dependencies:
                dts = self.tasks.get(dep_key)
                if dts is None:
                    missing[ts] = dep_key
                    continue
                ts.dependencies = added(ts.dependencies, dts)
                dts.dependents = added(dts.dependents, ts)
        self._generation += 1
        for order, ts in enumerate(_depth_first(fresh)):
            ts.priority = (ts.priority[0], self._generation, order)
        for ts, dep_key in missing.items():
            error = KeyError(f"dependency {dep_key!r} of {ts.key!r} is not known to the scheduler")
            self._err(ts, pickle.dumps(error), b"", f"KeyError: {error}", "")
        for ts in fresh:
            if ts.state == TS.RELEASED:
                self._compute(ts)
        for key in s.wanted:  # wants last, so that each client hears of each key once
            ts = self.tasks.get(key)
            if ts is not None:
                ts.who_wants = added(ts.who_wants, s.client)
                self.client_keys[s.client].add(ts)
                if s.report_start:
                    self._watch_start(ts, s.client)
                self._report_if_done(ts, s.client)

    def _watch_start(self, ts: TaskState, client: str) -> None:
        if ts.processing_on is not None and ts in ts.processing_on.executing:
            self._emit(ev.ReportTaskStarted, client=client, key=ts.key)
        elif ts.state in ACTIVE:
            self._start_watchers.setdefault(ts.key, set()).add(client)

    def _on_ClientDesiresKeys(self, s: ev.ClientDesiresKeys) -> None:
        for key in s.keys:
            ts = self.tasks.get(key)
            if ts is not None:
                ts.who_wants = added(ts.who_wants, s.client)
                self.client_keys[s.client].add(ts)
                if ts.state == TS.RELEASED:
                    self._compute(ts)
                self._report_if_done(ts, s.client)

    def _on_ClientReleasesKeys(self, s: ev.ClientReleasesKeys) -> None:
        self._unwant(s.client, s.keys)

    def _on_CancelKeys(self, s: ev.CancelKeys) -> None:
        keys = s.keys
        if s.unstarted_only:
            keys = tuple(key for key in keys if self._may_cancel_now(key, s.client))
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and s.client in ts.who_wants and ts.state in (*ACTIVE, TS.RELEASED):
                self._emit(ev.ReportCancelled, client=s.client, key=key)
        self._unwant(s.client, keys)

    def _may_cancel_now(self, key: Key, client: str) -> bool:
        """For a cancellation unless started: True if ``key`` cannot have started. For a
        task on a worker, not known to have started, ask the worker (``StealRequest``)."""
        ts = self.tasks.get(key)
        if ts is None or ts.processing_on is None:
            return True
        if ts not in ts.processing_on.executing and client in ts.who_wants:
            if key not in self._cancel_requests:
                self._emit(ev.StealRequest, worker=ts.processing_on.address, key=key)
            self._cancel_requests.setdefault(key, set()).add(client)
        return False

    def _on_RemoveClient(self, s: ev.RemoveClient) -> None:
        keys = [ts.key for ts in self.client_keys.pop(s.client, ())]
        self._unwant(s.client, keys)

    def _unwant_all(self, clients: Iterable[str], ts: TaskState) -> None:
        """Released ``ts`` is no longer wanted by ``clients``: forget it, or compute it
        again for whoever else needs it."""
        for client in clients:
            self._unwant(client, (ts.key,))
        if self.tasks.get(ts.key) is ts and ts.state == TS.RELEASED and self._needed(ts):
            self._compute(ts)

    def _unwant(self, client: str, keys: Iterable[Key]) -> None:
        owned = self.client_keys.get(client, set())
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.who_wants = discarded(ts.who_wants, client)
            owned.discard(ts)
            self._release_if_unneeded(ts)

    def _on_ScatterData(self, s: ev.ScatterData) -> None:
        for key, (address, nbytes) in s.placed.items():
            ws = self.workers.get(address)
            ts = self.tasks.get(key) or self.tasks.setdefault(key, TaskState(key))
            ts.who_wants = added(ts.who_wants, s.client)
            self.client_keys[s.client].add(ts)
            if ws is None:
                continue
            if ts.state == TS.RELEASED:
                ts.run_spec = None
                self._transition(ts, TS.MEMORY)
            self._add_replica(ts, ws, nbytes)
            ts.typename = s.typenames.get(key, ts.typename)
            self._report_if_done(ts, s.client)

    def _report_if_done(self, ts: TaskState, client: str) -> None:
        if ts.state == TS.MEMORY:
            self._emit(ev.ReportKeyInMemory, client=client, key=ts.key, nbytes=ts.nbytes,
                       who_has=tuple(w.address for w in ts.who_has), typename=ts.typename)
        elif ts.state == TS.ERRED and ts.error is not None:
            exc, tb, exc_text, tb_text = ts.error
            self._emit(ev.ReportTaskErred, client=client, key=ts.key, exception=exc,
                       traceback=tb, exception_text=exc_text, traceback_text=tb_text)

    # -- computing ---------------------------------------------------------------------

    def _compute(self, ts: TaskState) -> None:
        """Bring a released task towards memory: compute its lost inputs, then it."""
        # A worklist, not recursion: a chain of released inputs can be thousands long.
        stack = [(ts, False)]
        while stack:
            t, inputs_done = stack.pop()
            if not inputs_done:
                if t.state != TS.RELEASED:
                    continue  # reached twice through a shared input
                if t.run_spec is None:
                    self._err(t, pickle.dumps(DataLostError(f"data of {t.key!r} was lost")), b"",
                              f"DataLostError: data of {t.key!r} was lost and cannot be "
                              "recomputed", "")
                    continue
                self._transition(t, TS.WAITING)
                t.waiting_on = NONE
                stack.append((t, True))
                stack.extend((d, False) for d in t.dependencies if d.state == TS.RELEASED)
                continue
            if t.state != TS.WAITING:
                continue  # erred with an input meanwhile
            erred = next((d for d in t.dependencies if d.state == TS.ERRED), None)
            if erred is not None:
                assert erred.error is not None
                self._err(t, *erred.error)
                continue
            for dts in t.dependencies:
                if dts.state != TS.MEMORY:
                    t.waiting_on = added(t.waiting_on, dts)
            if not t.waiting_on:
                self._place(t)

    def _place(self, ts: TaskState) -> None:
        ws = self._decide_worker(ts)
        if ws is None:
            if ts.state != TS.NO_WORKER:
                self._transition(ts, TS.NO_WORKER)
            return
        self._assign(ts, ws)

    def _decide_worker(self, ts: TaskState) -> WorkerState | None:
        if ts.restrictions is not None:
            allowed = [self.workers[a] for a in ts.restrictions if a in self.workers
                       and self.workers[a].supplies(ts.resources)]
            if allowed or not ts.loose_restrictions:
                return min(allowed, key=lambda w: self._start_time(ts, w), default=None)
        if ts.resources:  # rare: worth a scan of the workers that have what it needs
            able = [w for w in self.workers.values() if w.supplies(ts.resources)]
            candidates = {w for dts in ts.dependencies for w in dts.who_has if w in able}
            least = min(able, key=WorkerState.load, default=None)
        else:
            candidates = {w for dts in ts.dependencies for w in dts.who_has}
            least = self._least_loaded()
        if least is not None:
            candidates.add(least)
        return min(candidates, key=lambda w: (self._start_time(ts, w), w.address), default=None)

    @staticmethod
    def _may_run(ts: TaskState, ws: WorkerState) -> bool:
        return (ts.restrictions is None or ws.address in ts.restrictions) and ws.supplies(
            ts.resources)

    def _start_time(self, ts: TaskState, ws: WorkerState) -> float:
        missing = sum(d.nbytes for d in ts.dependencies if ws not in d.who_has)
        return ws.load() + missing / self.bandwidth

    def _least_loaded(self) -> WorkerState | None:
        heap = self._load_heap
        while heap:
            load, _, address = heap[0]
            ws = self.workers.get(address)
            if ws is not None and ws.load() == load:
                return ws
            heapq.heappop(heap)  # stale entry
        return None

    def _set_occupancy(self, ws: WorkerState, occupancy: float) -> None:
        ws.occupancy = max(occupancy, 0.0)
        heapq.heappush(self._load_heap, (ws.load(), next(self._seq), ws.address))
        if len(self._load_heap) > 4 * len(self.workers) + 1000:
            self._load_heap = [(w.load(), next(self._seq), a) for a, w in self.workers.items()]
            heapq.heapify(self._load_heap)

    def _assign(self, ts: TaskState, ws: WorkerState) -> None:
        self._transition(ts, TS.PROCESSING)
        ts.processing_on = ws
        duration = self._estimate(ts)
        ws.processing[ts] = duration
        self._set_occupancy(ws, ws.occupancy + duration)
        self._emit(
            ev.ComputeTask, worker=ws.address, key=ts.key, run_spec=ts.run_spec,
            who_has={d.key: tuple(w.address for w in d.who_has) for d in ts.dependencies},
            nbytes={d.key: d.nbytes for d in ts.dependencies}, priority=ts.priority,
            resources=ts.resources,
        )

    def _unassign(self, ts: TaskState) -> WorkerState | None:
        ws, ts.processing_on = ts.processing_on, None
        if ws is not None and ts in ws.processing:
            self._set_occupancy(ws, ws.occupancy - ws.processing.pop(ts))
            ws.executing.discard(ts)
        return ws

    def _estimate(self, ts: TaskState) -> float:
        total, count = self._durations.get(ts.name, (self.default_duration, 1))
        return total / count

    # -- results from workers -----------------------------------------------------------

    def _on_TaskStarted(self, s: ev.TaskStarted) -> None:
        ts, ws = self.tasks.get(s.key), self.workers.get(s.worker)
        if ts is not None and ws is not None and ts.processing_on is ws:
            ws.executing.add(ts)
            for client in self._start_watchers.pop(ts.key, ()):
                if client in ts.who_wants:
                    self._emit(ev.ReportTaskStarted, client=client, key=ts.key)

    def _on_TaskFinished(self, s: ev.TaskFinished) -> None:
        ws, ts = self.workers.get(s.worker), self.tasks.get(s.key)
        if ws is None:
            return
        if ts is None or ts.state in (TS.RELEASED, TS.ERRED):
            self._emit(ev.FreeKeys, worker=ws.address, keys=(s.key,))
            return
        if ts.state == TS.MEMORY:
            self._add_replica(ts, ws, s.nbytes)
            return
        if ts.processing_on is not None and ts.processing_on is not ws:
            other = self._unassign(ts)  # ran elsewhere too (e.g. stolen): keep this result
            assert other is not None
            self._emit(ev.FreeKeys, worker=other.address, keys=(ts.key,))
        self._unassign(ts)
        if s.stop > s.start:
            total, count = self._durations.get(ts.name, (0.0, 0))
            self._durations[ts.name] = (total + s.stop - s.start, count + 1)
        ts.typename, ts.waiting_on, ts.finished_once = s.typename, NONE, True
        self._transition(ts, TS.MEMORY)
        self._add_replica(ts, ws, s.nbytes)
        for client in ts.who_wants:
            self._report_if_done(ts, client)
        for dts in list(ts.dependents):
            if ts in dts.waiting_on:
                dts.waiting_on = discarded(dts.waiting_on, ts)
                if not dts.waiting_on and dts.state == TS.WAITING:
                    self._place(dts)
        for dts in list(ts.dependencies):
            self._release_if_unneeded(dts)
        self._release_if_unneeded(ts)

    def _add_replica(self, ts: TaskState, ws: WorkerState, nbytes: int) -> None:
        ts.nbytes = nbytes
        if ws not in ts.who_has:
            ts.who_has = added(ts.who_has, ws)
            ws.has_what.add(ts)
            ws.nbytes += nbytes

    def _remove_replica(self, ts: TaskState, ws: WorkerState) -> None:
        if ws in ts.who_has:
            ts.who_has = discarded(ts.who_has, ws)
            ws.has_what.discard(ts)
            ws.nbytes -= ts.nbytes

    def _on_TaskErred(self, s: ev.TaskErred) -> None:
        ts, ws = self.tasks.get(s.key), self.workers.get(s.worker)
        if ts is None or ws is None or ts.state != TS.PROCESSING or ts.processing_on is not ws:
            return
        self._unassign(ts)
        self._emit(ev.FreeKeys, worker=ws.address, keys=(ts.key,))  # the worker keeps no error
        if ts.retries > 0:
            ts.retries -= 1
            self._transition(ts, TS.RELEASED)
            self._compute(ts)
            return
        self._err(ts, s.exception, s.traceback, s.exception_text, s.traceback_text)

    def _err(self, ts: TaskState, exc: bytes, tb: bytes, exc_text: str, tb_text: str) -> None:
        """Mark ``ts`` and everything downstream erred, and tell the clients that want them."""
        if ts.state != TS.ERRED:
            self._emit(ev.Notice, event="task-erred", key=ts.key, detail=exc_text)
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state == TS.ERRED:
                continue
            if t.state == TS.PROCESSING:
                assigned = self._unassign(t)
                if assigned is not None:
                    self._emit(ev.FreeKeys, worker=assigned.address, keys=(t.key,))
            if t.state == TS.MEMORY:
                continue
            self._transition(t, TS.ERRED)
            t.error, t.waiting_on = (exc, tb, exc_text, tb_text), NONE
            for client in t.who_wants:
                self._report_if_done(t, client)
            stack.extend(t.dependents)

    # -- releasing and forgetting ----------------------------------------------------------

    def _needed(self, ts: TaskState) -> bool:
        return bool(ts.who_wants) or any(d.state in ACTIVE for d in ts.dependents)

    def _release_if_unneeded(self, ts: TaskState) -> None:
        stack = [ts]  # a worklist: inputs kept only for this task go too, however deep
        while stack:
            t = stack.pop()
            if self._needed(t):
                continue
            if t.state == TS.MEMORY:
                for ws in list(t.who_has):
                    self._remove_replica(t, ws)
                    self._emit(ev.FreeKeys, worker=ws.address, keys=(t.key,))
            elif t.state == TS.PROCESSING:
                assigned = self._unassign(t)
                if assigned is not None:
                    self._emit(ev.FreeKeys, worker=assigned.address, keys=(t.key,))
            if t.state != TS.RELEASED:
                self._transition(t, TS.RELEASED)
                t.waiting_on = NONE
                stack.extend(t.dependencies)
            self._forget_if_unreferenced(t)

    def _forget_if_unreferenced(self, ts: TaskState) -> None:
        # A worklist, not recursion: a chain of inputs can be thousands of tasks long.
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state != TS.RELEASED or t.dependents or t.who_wants:
                continue
            if self.tasks.get(t.key) is t:
                del self.tasks[t.key]
            self._steals.pop(t.key, None)
            self._start_watchers.pop(t.key, None)
            self._cancel_requests.pop(t.key, None)
            for dts in t.dependencies:
                dts.dependents = discarded(dts.dependents, t)
            stack.extend(t.dependencies)
            t.dependencies = NONE

    # -- replicas and lost data ----------------------------------------------------------

    def _on_AddKeys(self, s: ev.AddKeys) -> None:
        ws = self.workers.get(s.worker)
        if ws is None:
            return
        unknown = []
        for key, nbytes in s.keys.items():
            ts = self.tasks.get(key)
            if ts is not None and ts.state == TS.MEMORY:
                self._add_replica(ts, ws, nbytes)
            else:
                unknown.append(key)
        if unknown:
            self._emit(ev.FreeKeys, worker=ws.address, keys=tuple(unknown))

    def _on_ReleaseWorkerData(self, s: ev.ReleaseWorkerData) -> None:
        ts, ws = self.tasks.get(s.key), self.workers.get(s.worker)
        if ts is not None and ws is not None:
            self._remove_replica(ts, ws)
            if ts.state == TS.MEMORY and not ts.who_has:
                self._lost(ts)
                self._resume_waiting()

    def _on_MissingData(self, s: ev.MissingData) -> None:
        ts, errant = self.tasks.get(s.key), self.workers.get(s.errant_worker)
        if ts is None:
            return
        if errant is not None:
            self._remove_replica(ts, errant)
        asker = self.workers.get(s.worker)
        if asker is not None:  # the task there needs fresh who_has: send it again
            for dts in [d for d in ts.dependents if d.processing_on is asker]:
                self._unassign(dts)
                self._emit(ev.FreeKeys, worker=asker.address, keys=(dts.key,))
                self._transition(dts, TS.RELEASED)
                self._compute_later(dts)
        if ts.state == TS.MEMORY and not ts.who_has:
            self._lost(ts)
        self._resume_waiting()

    def _on_ClientMissingData(self, s: ev.ClientMissingData) -> None:
        """A client found no data where we said: drop that replica, then tell it again
        where the key is, or recompute it (the report follows), or err it if it cannot be."""
        ts, errant = self.tasks.get(s.key), self.workers.get(s.errant_worker)
        if ts is None:
            return
        if errant is not None and errant in ts.who_has:
            self._remove_replica(ts, errant)
            self._emit(ev.FreeKeys, worker=errant.address, keys=(ts.key,))  # if it has one
        if ts.state == TS.MEMORY and not ts.who_has:
            self._lost(ts)
            self._resume_waiting()
        elif ts.state == TS.RELEASED and self._needed(ts):  # e.g. scattered to a dead worker
            self._compute(ts)
        elif s.client in ts.who_wants:
            self._report_if_done(ts, s.client)

    def _compute_later(self, ts: TaskState) -> None:
        self._pending_compute.append(ts)

    def _resume_waiting(self) -> None:
        """Bring back the tasks set aside while replicas and assignments were corrected."""
        while self._pending_compute:
            ts = self._pending_compute.pop(0)
            if ts.state != TS.RELEASED:
                continue
            if self._needed(ts) or any(d in self._pending_compute for d in ts.dependents):
                self._compute(ts)
            else:
                self._release_if_unneeded(ts)

    def _lost(self, ts: TaskState) -> None:
        """The last replica of ``ts`` is gone: recompute it if still needed."""
        self._emit(ev.Notice, event="key-lost", key=ts.key, detail="its last copy is gone")
        self._transition(ts, TS.RELEASED)
        for dts in ts.dependents:
            if dts.state == TS.PROCESSING:
                ws = self._unassign(dts)
                if ws is not None:
                    self._emit(ev.FreeKeys, worker=ws.address, keys=(dts.key,))
                self._transition(dts, TS.RELEASED)
                self._compute_later(dts)
            elif dts.state in (TS.WAITING, TS.NO_WORKER):
                if dts.state == TS.NO_WORKER:
                    self._transition(dts, TS.RELEASED)
                    self._compute_later(dts)
                else:
                    dts.waiting_on = added(dts.waiting_on, ts)
        self._compute_later(ts)

    # -- workers ---------------------------------------------------------------------------

    def _on_AddWorker(self, s: ev.AddWorker) -> None:
        if s.address in self.workers:
            return
        ws = self.workers[s.address] = WorkerState(
            s.address, max(1, s.nthreads), s.memory_limit, s.name, resources=dict(s.resources)
        )
        self._set_occupancy(ws, 0.0)
        for ts in [t for t in self.tasks.values() if t.state == TS.NO_WORKER]:
            self._place(ts)

    def _on_RemoveWorker(self, s: ev.RemoveWorker) -> None:
        ws = self.workers.pop(s.address, None)
        if ws is None:
            return
        for ts in list(ws.processing):
            # Suspects: tasks it was running that never finished anywhere. Queued tasks are
            # innocent, and so is a task that finished before: it runs again because data
            # was lost, and recomputed roots run first on every restarted worker, slow while
            # it starts up, so they would be blamed for deaths they did not cause.
            if ts in ws.executing and not ts.finished_once:
                ts.suspicious += 1
            self._unassign(ts)
            self._transition(ts, TS.RELEASED)
            if ts.suspicious >= self.allowed_failures:
                error = KilledWorker(
                    f"task {ts.key!r} was running on {ts.suspicious} workers that died; "
                    f"the last was {ws.address}"
                )
                self._err(ts, pickle.dumps(error), b"", f"KilledWorker: {error}", "")
            else:
                self._compute_later(ts)
        held = list(ws.has_what)
        for ts in held:
            self._remove_replica(ts, ws)
        for ts in held:
            if ts.state == TS.MEMORY and not ts.who_has:
                self._lost(ts)
        self._resume_waiting()

    # -- stealing -------------------------------------------------------------------------

    def _on_Tick(self, s: ev.Tick) -> None:
        idle = [w for w in self.workers.values() if len(w.processing) < w.nthreads]
        if not idle:
            return
        busy = sorted(
            (w for w in self.workers.values() if len(w.processing) > w.nthreads),
            key=WorkerState.load, reverse=True,
        )
        for thief in idle:
            for victim in busy:
                if len(self._steals) >= self.max_steals_in_flight:
                    return
                if self._steal_one(victim, thief):
                    break

    def _steal_one(self, victim: WorkerState, thief: WorkerState) -> bool:
        queued = [t for t in victim.processing
                  if t.key not in self._steals and self._may_run(t, thief)]
        if len(victim.processing) <= victim.nthreads or not queued:
            return False
        ts = max(queued, key=lambda t: t.priority)  # the one that would run last
        if self._start_time(ts, thief) >= victim.load():
            return False
        self._steals[ts.key] = thief.address
        self._emit(ev.StealRequest, worker=victim.address, key=ts.key)
        return True

    def _on_StealResponse(self, s: ev.StealResponse) -> None:
        thief_address = self._steals.pop(s.key, None)
        cancelling = self._cancel_requests.pop(s.key, ())  # not released: it started
        ts = self.tasks.get(s.key)
        if not s.released or ts is None or ts.state != TS.PROCESSING:
            return
        if ts.processing_on is None or ts.processing_on.address != s.worker:
            return
        self._unassign(ts)
        self._transition(ts, TS.RELEASED)
        if cancelling:
            for client in cancelling:
                if client in ts.who_wants:
                    self._emit(ev.ReportCancelled, client=client, key=ts.key)
            self._unwant_all(cancelling, ts)
            return
        self._transition(ts, TS.WAITING)
        thief = self.workers.get(thief_address or "")
        if thief is not None and self._may_run(ts, thief):
            self._assign(ts, thief)
        else:
            self._place(ts)

    # -- queries ---------------------------------------------------------------------------

    def who_has(self, keys: Iterable[Key] | None = None) -> dict[Key, list[str]]:
        chosen = self.tasks.values() if keys is None else filter(None, map(self.tasks.get, keys))
        return {ts.key: sorted(w.address for w in ts.who_has) for ts in chosen
                if keys is not None or ts.who_has}

    def has_what(self) -> dict[str, list[Key]]:
        return {a: [t.key for t in w.has_what] for a, w in self.workers.items()}

    def nthreads(self) -> dict[str, int]:
        return {a: w.nthreads for a, w in self.workers.items()}

    def task_state(self, key: Key) -> str | None:
        ts = self.tasks.get(key)
        return None if ts is None else ts.state.value

    def info(self) -> dict[str, Any]:
        by_state: dict[str, int] = defaultdict(int)
        for ts in self.tasks.values():
            by_state[ts.state.value] += 1
        workers = {
            a: {"nthreads": w.nthreads, "memory_limit": w.memory_limit, "name": w.name,
                "processing": len(w.processing), "keys": len(w.has_what), "nbytes": w.nbytes}
            for a, w in self.workers.items()
        }
        return {"workers": workers, "tasks": dict(by_state)}

    def story(self, key: Key) -> list[tuple[Key, str, str, str]]:
        return [entry for entry in self.log if entry[0] == key]

    def validate(self) -> None:
        counted = Counter((t.name, t.state) for t in self.tasks.values() if t.state != TS.RELEASED)
        assert self.counts == dict(counted), (self.counts, counted)
        for key, ts in self.tasks.items():
            assert ts.key == key
            if ts.state == TS.PROCESSING:
                assert ts.processing_on is not None, key
                assert ts in ts.processing_on.processing, key
            else:
                assert ts.processing_on is None, key
            if ts.state == TS.MEMORY:
                assert ts.who_has, key
            for ws in ts.who_has:
                assert ts in ws.has_what, key
                assert ws.address in self.workers, key
            if ts.state == TS.WAITING:
                assert ts.waiting_on, key
            for dts in ts.waiting_on:
                assert dts in ts.dependencies, key
                assert dts.state != TS.MEMORY, key
            for dts in ts.dependencies:
                assert ts in dts.dependents, key
                assert self.tasks.get(dts.key) is dts, key
        for ws in self.workers.values():
            for ts in ws.processing:
                assert ts.processing_on is ws
                assert ts.state == TS.PROCESSING
            assert abs(ws.occupancy - sum(ws.processing.values())) < 1e-6 * (1 + ws.occupancy)


def _depth_first(tasks: list[TaskState]) -> list[TaskState]:
    """Post-order from the terminal tasks: inputs first, and a chain before the next root."""
    members = set(tasks)
    order: list[TaskState] = []
    seen: set[TaskState] = set()
    terminals = [t for t in tasks if not (t.dependents & members)]
    for root in terminals:
        stack: list[tuple[TaskState, bool]] = [(root, False)]
        while stack:
            ts, expanded = stack.pop()
            if expanded:
                order.append(ts)
                continue
            if ts in seen:
                continue
            seen.add(ts)
            stack.append((ts, True))
            deps = sorted((d for d in ts.dependencies if d in members and d not in seen),
                          key=lambda d: str(d.key), reverse=True)
            stack.extend((d, False) for d in deps)
    return order
