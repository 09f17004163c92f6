"""Lost data: what the scheduler does when the last copy of a result is gone.

Theory of operation
-------------------
* A stimulus that loses replicas (a worker leaving, data it reports missing, a copy
  that failed) first corrects replicas and assignments, setting aside with
  ``compute_later`` every task that has to run again; ``lost`` turns a result whose
  last replica went back into ``released`` and sets aside its dependents under way.
* ``resume_waiting``, at the end of that stimulus, brings the set-aside tasks back in
  the order they were set aside: computed again (from their lineage) if something
  still needs them, released otherwise.
* The set-aside tasks are a FIFO with a membership set (``SchedulerState.pending``),
  so the work is proportional to the tasks touched, however big the worker that died.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.scheduler import events as ev
from corral.scheduler.records import TS, TaskState, added

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState


def compute_later(state: SchedulerState, ts: TaskState) -> None:
    if ts not in state.pending_set:
        state.pending_set.add(ts)
        state.pending_compute.append(ts)


def resume_waiting(state: SchedulerState) -> None:
    """Bring back the tasks set aside while replicas and assignments were corrected."""
    pending, members = state.pending_compute, state.pending_set
    while pending:
        ts = pending.popleft()
        members.discard(ts)
        if ts.state != TS.RELEASED:
            continue
        if state.needed(ts) or any(d in members for d in ts.dependents):
            state.compute(ts)
        else:
            state.release_if_unneeded(ts)


def lost(state: SchedulerState, ts: TaskState) -> None:
    """The last replica of ``ts`` is gone: recompute it if still needed."""
    state.emit(ev.Notice, event="key-lost", key=ts.key, detail="its last copy is gone")
    state.transition(ts, TS.RELEASED)
    for dts in ts.dependents:
        if dts.state == TS.PROCESSING:
            ws = state.unassign(dts)
            if ws is not None:
                state.emit(ev.FreeKeys, worker=ws.address, keys=(dts.key,))
            state.transition(dts, TS.RELEASED)
            compute_later(state, dts)
        elif dts.state in (TS.WAITING, TS.NO_WORKER, TS.QUEUED):
            if dts.state != TS.WAITING:
                state.transition(dts, TS.RELEASED)
                compute_later(state, dts)
            else:
                dts.waiting_on = added(dts.waiting_on, ts)
    compute_later(state, ts)
