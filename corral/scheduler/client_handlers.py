"""How the scheduler handles what clients say: graphs, wants, cancellations, scatters;
and clients coming, going, and coming back within their grace.

Each ``def <stimulus>(state, s)`` here is the handler ``SchedulerState.handle`` finds
for that stimulus type in ``corral.scheduler.dispatch``; the operations it calls on
``state`` (compute, release, report ...) are the core's, in ``corral.scheduler.state``.
"""

from __future__ import annotations

import pickle
import sys
from typing import TYPE_CHECKING

from corral.basic_types import Key
from corral.scheduler import events as ev
from corral.scheduler import recovery, stimulus_log
from corral.scheduler.placement import depth_first
from corral.scheduler.records import (
    ACTIVE,
    AWAITED,
    FIRE_AND_FORGET,
    NONE,
    TS,
    TaskState,
    added,
    extended,
)

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState


def update_graph(state: SchedulerState, s: ev.UpdateGraph) -> None:
    tasks, functions = state.tasks, s.functions
    fresh: list[TaskState] = []
    records: list[TaskState] = []  # the record of each spec, in order
    for spec in s.tasks:
        ts = tasks.get(spec.key)
        if ts is None:
            ts = tasks[spec.key] = TaskState(spec.key)
        records.append(ts)
        if ts.state != TS.RELEASED:
            continue  # an equal pure call under way or done: share it
        # One string per function name, however many tasks and messages carry it; one
        # function's bytes for all the tasks of a map.
        ts.run_spec, ts.name, ts.retries = spec.run_spec, sys.intern(spec.name), spec.retries
        ts.function = functions[spec.function] if 0 <= spec.function < len(functions) else None
        ts.restrictions = frozenset(spec.workers) if spec.workers is not None else None
        ts.loose_restrictions, ts.resources = spec.allow_other_workers, spec.resources
        ts.priority = (-spec.priority,)
        fresh.append(ts)
    missing: dict[TaskState, Key] = {}
    deps: list[Key] = []  # every input's key, as its record holds it (for the log)
    # New links gathered in plain lists and dicts, then stored once per task: a graph
    # has several per task, and ``added`` one at a time was a Python call each.
    dependents: dict[TaskState, list[TaskState]] = {}
    for spec, ts in zip(s.tasks, records, strict=True):
        inputs = ts.dependencies
        found: dict[TaskState, None] = {}  # its new inputs, an ordered set
        for dep_key in spec.dependencies:
            dts = tasks.get(dep_key)
            if dts is None:
                missing[ts] = dep_key
                deps.append(dep_key)
                continue
            deps.append(dts.key)
            if dts in inputs or dts in found:
                continue
            found[dts] = None
            if dts in dependents:
                dependents[dts].append(ts)
            else:
                dependents[dts] = [ts]
        if found:
            ts.dependencies = extended(inputs, list(found))
            if ts.state in ACTIVE:
                for dts in found:
                    dts.active_dependents += 1
    for dts, more in dependents.items():
        dts.dependents = extended(dts.dependents, more)
    state.generation += 1
    for order, ts in enumerate(depth_first(fresh)):
        ts.priority = (ts.priority[0], state.generation, order)
    wanted = tuple(tasks[k].key if k in tasks else k for k in s.wanted)
    state.log_packed(s, stimulus_log.pack(s, records, deps, wanted))
    for ts, dep_key in missing.items():
        error = KeyError(f"dependency {dep_key!r} of {ts.key!r} is not known to the scheduler")
        state.err(ts, pickle.dumps(error), b"", f"KeyError: {error}", "")
    # New wanted tasks are wanted before they are sent: a waiting client then gets small
    # results with the report (``inline_result``).
    new = set(fresh)
    for ts in [t for k in wanted if (t := tasks.get(k)) is not None and t in new]:
        ts.who_wants = added(ts.who_wants, s.client)
    for ts in fresh:
        if ts.state == TS.RELEASED:
            state.compute(ts)
    for key in wanted:  # reports last, so that each client hears of each key once
        ts = tasks.get(key)
        if ts is not None:
            ts.who_wants = added(ts.who_wants, s.client)
            state.client_keys[s.client][ts] = None
            if s.report_start:
                _watch_start(state, ts, s.client)
            state.report_if_done(ts, s.client)


def _watch_start(state: SchedulerState, ts: TaskState, client: str) -> None:
    if ts.processing_on is not None and ts in ts.processing_on.executing:
        state.emit(ev.ReportTaskStarted, client=client, key=ts.key)
    elif ts.state in ACTIVE:
        state.start_watchers.setdefault(ts.key, set()).add(client)


def client_desires_keys(state: SchedulerState, s: ev.ClientDesiresKeys) -> None:
    """A client holds futures for these keys (unpickled from a result, say). A key not
    known yet is held for it as a placeholder, released and without a task, which the
    ``UpdateGraph`` that names it fills in: a task's result may carry a future of the
    worker's own client, whose graph travels on another connection and may come later."""
    for key in s.keys:
        ts = state.tasks.get(key)
        if ts is None:
            ts = state.tasks[key] = TaskState(key)
            ts.name = AWAITED
        ts.who_wants = added(ts.who_wants, s.client)
        state.client_keys[s.client][ts] = None
        if ts.state == TS.RELEASED:
            state.compute(ts)  # a placeholder waits for its graph (``compute``)
        state.report_if_done(ts, s.client)


def fire_and_forget(state: SchedulerState, s: ev.FireAndForget) -> None:
    """Keep these tasks (and so their inputs) until they are done, whoever lets go of them:
    the pseudo-client ``fire-and-forget`` wants them until they finish or err."""
    for key in s.keys:
        ts = state.tasks.get(key)
        if ts is None or ts.state in (TS.MEMORY, TS.ERRED):
            continue  # done already (or unknown: nothing to run)
        ts.who_wants = added(ts.who_wants, FIRE_AND_FORGET)
        state.client_keys[FIRE_AND_FORGET][ts] = None
        if ts.state == TS.RELEASED:
            state.compute(ts)


def retry_keys(state: SchedulerState, s: ev.RetryKeys) -> None:
    """Run erred keys again: release them and every erred input behind them, then compute
    them (their released inputs come back with them)."""
    wanted = [ts for ts in map(state.tasks.get, s.keys) if ts is not None
              and ts.state == TS.ERRED]
    stack, seen = list(wanted), set()
    while stack:
        ts = stack.pop()
        if ts in seen or ts.state != TS.ERRED:
            continue
        seen.add(ts)
        state.transition(ts, TS.RELEASED)
        ts.error, ts.waiting_on = None, NONE
        stack.extend(ts.dependencies)
    for ts in wanted:
        if ts.state == TS.RELEASED and state.needed(ts):
            state.compute(ts)
    for ts in seen:
        if ts.state == TS.RELEASED:
            state.release_if_unneeded(ts)


def client_releases_keys(state: SchedulerState, s: ev.ClientReleasesKeys) -> None:
    state.unwant(s.client, s.keys)


def cancel_keys(state: SchedulerState, s: ev.CancelKeys) -> None:
    keys = s.keys
    if s.unstarted_only:
        keys = tuple(key for key in keys if _may_cancel_now(state, key, s.client))
    for key in keys:
        ts = state.tasks.get(key)
        if ts is not None and s.client in ts.who_wants and ts.state in (*ACTIVE, TS.RELEASED):
            state.emit(ev.ReportCancelled, client=s.client, key=key)
    state.unwant(s.client, keys)


def _may_cancel_now(state: SchedulerState, key: Key, client: str) -> bool:
    """For a cancellation unless started: True if ``key`` cannot have started. For a
    task on a worker, not known to have started, ask the worker (``StealRequest``)."""
    ts = state.tasks.get(key)
    if ts is None or ts.processing_on is None:
        return True
    if ts not in ts.processing_on.executing and client in ts.who_wants:
        if key not in state.cancel_requests:
            state.emit(ev.StealRequest, worker=ts.processing_on.address, key=key)
        state.cancel_requests.setdefault(key, set()).add(client)
    return False


def remove_client(state: SchedulerState, s: ev.RemoveClient) -> None:
    drop_client(state, s.client, "closed")


def drop_client(state: SchedulerState, client: str, reason: str) -> None:
    """Release every key ``client`` holds and forget it."""
    state.liveness.client_connected(client)  # gone for good: no deadline left pending
    keys = [ts.key for ts in state.client_keys.pop(client, ())]
    state.unwant(client, keys)
    state.emit(ev.DropClient, client=client, reason=reason)


def client_connected(state: SchedulerState, s: ev.ClientConnected) -> None:
    state.liveness.client_connected(s.client)


def client_disconnected(state: SchedulerState, s: ev.ClientDisconnected) -> None:
    """Without a goodbye: keep its keys for ``client_grace``, in case it comes back."""
    state.liveness.client_disconnected(s.client, s.now)


def scatter_data(state: SchedulerState, s: ev.ScatterData) -> None:
    for key, (address, nbytes) in s.placed.items():
        ws = state.workers.get(address)
        ts = state.tasks.get(key) or state.tasks.setdefault(key, TaskState(key))
        ts.who_wants = added(ts.who_wants, s.client)
        state.client_keys[s.client][ts] = None
        if ws is None:
            continue
        if ts.state == TS.RELEASED:
            ts.run_spec = None
            state.transition(ts, TS.MEMORY)
        state.add_replica(ts, ws, nbytes)
        ts.typename = s.typenames.get(key, ts.typename)
        state.report_if_done(ts, s.client)


def client_missing_data(state: SchedulerState, s: ev.ClientMissingData) -> None:
    """A client found no data where we said: drop that replica, then tell it again
    where the key is, or recompute it (the report follows), or err it if it cannot be."""
    ts, errant = state.tasks.get(s.key), state.workers.get(s.errant_worker)
    if ts is None:
        return
    if errant is not None and errant in ts.who_has:
        state.remove_replica(ts, errant)
        state.emit(ev.FreeKeys, worker=errant.address, keys=(ts.key,))  # if it has one
    if ts.state == TS.MEMORY and not ts.who_has:
        recovery.lost(state, ts)
        recovery.resume_waiting(state)
    elif ts.state == TS.RELEASED and state.needed(ts):  # e.g. scattered to a dead worker
        state.compute(ts)
    elif s.client in ts.who_wants:
        state.report_if_done(ts, s.client)
