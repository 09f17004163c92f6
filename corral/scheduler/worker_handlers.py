"""How the scheduler handles what workers say: joining, heartbeats and leaving,
results, replicas, missing data, and answers to steal requests; and the passing of
time (``Tick``), which expires silent workers and absent clients.

Each ``def <stimulus>(state, s)`` here is the handler ``SchedulerState.handle`` finds
for that stimulus type in ``corral.scheduler.dispatch``; the operations it calls on
``state`` are the core's, in ``corral.scheduler.state``.
"""

from __future__ import annotations

import dataclasses
import heapq
import pickle
from typing import TYPE_CHECKING

from corral.exceptions import KilledWorker
from corral.scheduler import events as ev
from corral.scheduler import recovery
from corral.scheduler.client_handlers import drop_client
from corral.scheduler.records import (
    FIRE_AND_FORGET,
    NONE,
    TS,
    TaskState,
    WorkerState,
    discarded,
)

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState


def add_worker(state: SchedulerState, s: ev.AddWorker) -> None:
    if s.address in state.workers:
        return
    ws = state.workers[s.address] = WorkerState(
        s.address, max(1, s.nthreads), s.memory_limit, s.name, resources=dict(s.resources)
    )
    state.liveness.worker_joined(s.address, s.now)
    state.placement.worker_joined(ws)
    state.placement.set_occupancy(ws, 0.0)
    state.queue.worker_joined(ws)
    for ts in list(state.no_worker):
        if ts.state == TS.NO_WORKER:  # placing one may not move another, but be sure
            state.place(ts)


def worker_heartbeat(state: SchedulerState, s: ev.WorkerHeartbeat) -> None:
    state.liveness.worker_seen(s.worker, s.now)


def worker_paused(state: SchedulerState, s: ev.WorkerPaused) -> None:
    """A paused worker gets no new tasks (its queued ones may be stolen); once it
    resumes, tasks that found no worker meanwhile are placed again."""
    ws = state.workers.get(s.worker)
    if ws is None or ws.paused == s.paused:
        return
    ws.paused = s.paused
    if not s.paused:
        state.placement.set_occupancy(ws, ws.occupancy)  # back among the candidates
        state.queue.note_freed(ws)
        for ts in list(state.no_worker):
            if ts.state == TS.NO_WORKER:
                state.place(ts)


def _running(ws: WorkerState) -> set[TaskState]:
    """The tasks ``ws`` was running, as far as the scheduler can tell: those it reported
    started and, while fewer than its threads, those it would have started next (its
    first by priority): a start report may wait for the worker's next write, and a task
    that kills its worker at once never sends it."""
    running = set(ws.executing)
    free = ws.nthreads - len(running) + len(ws.long_running)  # seceded: no thread held
    if free > 0:
        unreported = [ts for ts in ws.processing if ts not in running]
        running.update(heapq.nsmallest(free, unreported, key=lambda ts: ts.priority))
    return running


def remove_worker(state: SchedulerState, s: ev.RemoveWorker) -> None:
    remove(state, s.address, s.reason)


def remove(state: SchedulerState, address: str, reason: str) -> None:
    """Forget the worker at ``address``: run its tasks elsewhere, recompute lost data."""
    ws = state.workers.pop(address, None)
    if ws is None:
        return
    state.liveness.worker_left(address)
    if ws.processing or ws.has_what:
        state.checkpoints.arm()  # work was lost: second copies are now worth their cost
    state.placement.worker_left(ws)
    state.queue.worker_left(ws)
    state.retiring.pop(address, None)
    suspects = set() if ws.retiring else _running(ws)
    for ts in list(ws.processing):
        # Suspects: tasks it was running that never finished anywhere. Queued tasks are
        # innocent, and so is a task that finished before: it runs again because data
        # was lost, and recomputed roots run first on every restarted worker, slow while
        # it starts up, so they would be blamed for deaths they did not cause. A worker
        # closed on purpose (retired) did not die of its tasks.
        if ts in suspects and not ts.finished_once:
            ts.suspicious += 1
        state.unassign(ts)
        state.transition(ts, TS.RELEASED)
        if ts.suspicious >= state.allowed_failures:
            error = KilledWorker(
                f"task {ts.key!r} was running on {ts.suspicious} workers that died; "
                f"the last was {ws.address}"
            )
            state.err(ts, pickle.dumps(error), b"", f"KilledWorker: {error}", "")
        else:
            recovery.compute_later(state, ts)
    held = list(ws.has_what)
    for ts in held:
        state.remove_replica(ts, ws)
    for ts in held:
        if ts.state == TS.MEMORY and not ts.who_has:
            recovery.lost(state, ts)
    state.checkpoints.worker_removed(ws, held)
    recovery.resume_waiting(state)
    state.emit(ev.DropWorker, worker=address, reason=reason, graceful=ws.retiring)


def task_started(state: SchedulerState, s: ev.TaskStarted) -> None:
    ts, ws = state.tasks.get(s.key), state.workers.get(s.worker)
    if ts is not None and ws is not None and ts.processing_on is ws:
        ws.executing.add(ts)
        if not state.start_watchers:
            return  # the usual case: nobody asked to hear of starts
        for client in state.start_watchers.pop(ts.key, ()):
            if client in ts.who_wants:
                state.emit(ev.ReportTaskStarted, client=client, key=ts.key)


def task_seceded(state: SchedulerState, s: ev.TaskSeceded) -> None:
    """A task left its thread slot to wait for tasks it launched: not load any more."""
    ts, ws = state.tasks.get(s.key), state.workers.get(s.worker)
    if ts is not None and ws is not None:
        state.placement.secede(ts, ws)
        state.queue.note_freed(ws)


def task_rejoined(state: SchedulerState, s: ev.TaskRejoined) -> None:
    ts, ws = state.tasks.get(s.key), state.workers.get(s.worker)
    if ts is not None and ws is not None:
        state.placement.rejoin(ts, ws)


def task_finished(state: SchedulerState, s: ev.TaskFinished) -> None:
    ws, ts = state.workers.get(s.worker), state.tasks.get(s.key)
    if ts is not None:  # built here, not through ``emit``: one per task
        state._actions.append(ev.RecordTaskRun(
            stimulus_id=state._stimulus_id, worker=s.worker, key=ts.key, name=ts.name,
            start=s.start, stop=s.stop, nbytes=s.nbytes))
    if ws is None:
        return
    if ts is None or ts.state in (TS.RELEASED, TS.ERRED):
        state.emit(ev.FreeKeys, worker=ws.address, keys=(s.key,))
        return
    if ts.state == TS.MEMORY:
        state.add_replica(ts, ws, s.nbytes)
        if ts.checkpoint:
            state.checkpoints.replica_added(ts)
        return
    if ts.processing_on is not None and ts.processing_on is not ws:
        other = state.unassign(ts)  # ran elsewhere too (e.g. stolen): keep this result
        assert other is not None
        state.emit(ev.FreeKeys, worker=other.address, keys=(ts.key,))
    state.unassign(ts)
    if s.stop > s.start:
        state.placement.record_duration(ts.name, s.stop - s.start)
        if state.queue.enabled:
            state.queue.finished(ts.name, s.nbytes)  # are they short? small?
    ts.typename, ts.waiting_on, ts.finished_once = s.typename, NONE, True
    state.transition(ts, TS.MEMORY)
    state.add_replica(ts, ws, s.nbytes)
    if state.checkpoints.armed:  # (a healthy cluster pays nothing, not even the call)
        state.checkpoints.finished(ts, s.stop - s.start)  # before its inputs may be freed
    for client in ts.who_wants:
        state.report_if_done(ts, client, s.pickled)
    if s.pickled is not None:  # the stimulus log keeps no results
        state.log_packed(s, dataclasses.replace(s, pickled=None))
    if FIRE_AND_FORGET in ts.who_wants:
        state.unwant(FIRE_AND_FORGET, (ts.key,))
    for dts in list(ts.dependents):
        if ts in dts.waiting_on:
            dts.waiting_on = discarded(dts.waiting_on, ts)
            if not dts.waiting_on and dts.state == TS.WAITING:
                state.place(dts)
    state.release_if_unneeded(*ts.dependencies, ts)  # its inputs first, then it


def task_erred(state: SchedulerState, s: ev.TaskErred) -> None:
    ts, ws = state.tasks.get(s.key), state.workers.get(s.worker)
    if ts is not None:
        state.emit(ev.RecordTaskRun, worker=s.worker, key=ts.key, name=ts.name, start=s.start,
                   stop=s.stop, erred=True)
    if ts is None or ws is None or ts.state != TS.PROCESSING or ts.processing_on is not ws:
        return
    state.unassign(ts)
    state.emit(ev.FreeKeys, worker=ws.address, keys=(ts.key,))  # the worker keeps no error
    if ts.retries > 0:
        ts.retries -= 1
        state.transition(ts, TS.RELEASED)
        state.compute(ts)
        return
    state.err(ts, s.exception, s.traceback, s.exception_text, s.traceback_text)


def add_keys(state: SchedulerState, s: ev.AddKeys) -> None:
    ws = state.workers.get(s.worker)
    if ws is None:
        return
    unknown = []
    for key, nbytes in s.keys.items():
        ts = state.tasks.get(key)
        if ts is not None and ts.state == TS.MEMORY:
            state.add_replica(ts, ws, nbytes)
            if ts.checkpoint:
                state.checkpoints.replica_added(ts)
        else:
            unknown.append(key)
    if unknown:
        state.emit(ev.FreeKeys, worker=ws.address, keys=tuple(unknown))


def release_worker_data(state: SchedulerState, s: ev.ReleaseWorkerData) -> None:
    ts, ws = state.tasks.get(s.key), state.workers.get(s.worker)
    if ts is not None and ws is not None:
        state.remove_replica(ts, ws)
        if ts.state == TS.MEMORY and not ts.who_has:
            recovery.lost(state, ts)
            recovery.resume_waiting(state)


def missing_data(state: SchedulerState, s: ev.MissingData) -> None:
    ts, errant = state.tasks.get(s.key), state.workers.get(s.errant_worker)
    if ts is None:
        return
    if errant is not None:
        state.remove_replica(ts, errant)
    if ts.checkpoint:
        state.checkpoints.copy_failed(ts, s.worker)
    asker = state.workers.get(s.worker)
    if asker is not None:  # the task there needs fresh who_has: send it again
        for dts in [d for d in ts.dependents if d.processing_on is asker]:
            state.unassign(dts)
            state.emit(ev.FreeKeys, worker=asker.address, keys=(dts.key,))
            state.transition(dts, TS.RELEASED)
            recovery.compute_later(state, dts)
    if ts.state == TS.MEMORY and not ts.who_has:
        recovery.lost(state, ts)
    recovery.resume_waiting(state)


def tick(state: SchedulerState, s: ev.Tick) -> None:
    """Time has passed: expire silent workers and clients past their grace, then steal."""
    liveness = state.liveness
    for address in liveness.silent_workers(s.now):
        remove(state, address, f"no heartbeat for {liveness.worker_ttl} s")
    for client in liveness.expired_clients(s.now):
        drop_client(state, client, f"not back within {liveness.client_grace} s")
    for victim, ts in state.stealing.choose(state.workers.values()):
        state.emit(ev.StealRequest, worker=victim.address, key=ts.key)


def steal_response(state: SchedulerState, s: ev.StealResponse) -> None:
    thief_address = state.stealing.answered(s.key)
    cancelling = state.cancel_requests.pop(s.key, ())  # not released: it started
    ts = state.tasks.get(s.key)
    if not s.released or ts is None or ts.state != TS.PROCESSING:
        return
    if ts.processing_on is None or ts.processing_on.address != s.worker:
        return
    state.unassign(ts)
    state.transition(ts, TS.RELEASED)
    if cancelling:
        for client in cancelling:
            if client in ts.who_wants:
                state.emit(ev.ReportCancelled, client=client, key=ts.key)
        state.unwant_all(cancelling, ts)
        return
    state.transition(ts, TS.WAITING)
    thief = state.workers.get(thief_address or "")
    # A root-ish task goes back to the queue instead, to leave in its turn.
    if (thief is not None and state.placement.may_run(ts, thief)
            and not state.queue.is_rootish(ts)):
        state.assign(ts, thief)
    else:
        state.place(ts)
