"""Retiring workers gracefully: their data moves to others before they close.

Theory of operation
-------------------
* ``RetireWorkers`` names workers by address, name or host (``Placement.named``); a
  worker asks for itself with ``RetireMe`` (its ``--lifetime`` is over). Each one known
  and not yet retiring is marked ``retiring``: placement gives it no new task, and
  idle workers may steal the tasks queued on it.
* While any worker is retiring, ``progress`` runs after every batch of stimuli
  (``SchedulerState.handle``). A key held by a retiring worker is *safe* once a worker
  that is not retiring holds it too. For each key that is not, one other worker is
  asked to copy it (``AcquireReplicas``, one message per worker): the one holding the
  fewest bytes, counting what it was already asked for. Scattered data, which has no
  lineage to recompute it from, is copied like any result. A key is asked for again
  only if the worker asked has left or started retiring meanwhile; a copy that failed
  (``MissingData``) dropped the retiring worker's replica, so its key is no longer
  its to save.
* Once every key a retiring worker holds is safe, it is told to close
  (``CloseWorker``: it exits with success, so its nanny does not restart it) and
  forgotten at once (``worker_handlers.remove``): tasks queued or running there are
  placed elsewhere, and it is blamed for none of them. Clients that want its keys are
  told where they are now.
* A worker whose keys no other worker can take (every other worker is retiring, or
  there is none) is not retired: ``RetirementRefused``, and it serves on.
* The work per batch is proportional to the keys the retiring workers hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.scheduler import events as ev
from corral.scheduler.records import TS, TaskState, WorkerState
from corral.scheduler.replication import CopyOrders
from corral.scheduler.worker_handlers import remove

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState


def retire_workers(state: SchedulerState, s: ev.RetireWorkers) -> None:
    for spec in s.workers:
        for ws in state.placement.named(spec):
            _start(state, ws)


def retire_me(state: SchedulerState, s: ev.RetireMe) -> None:
    ws = state.workers.get(s.worker)
    if ws is not None:
        _start(state, ws)


def _start(state: SchedulerState, ws: WorkerState) -> None:
    if not ws.retiring:
        ws.retiring = True
        state.retiring[ws.address] = {}


def progress(state: SchedulerState) -> None:
    """Ask for copies of the retiring workers' unsafe keys; close those with none left."""
    others = [w for w in state.workers.values() if not w.retiring]
    orders = CopyOrders(others)  # none of them holds an unsafe key
    for address, asked in list(state.retiring.items()):
        ws = state.workers[address]
        unsafe = [ts for ts in ws.has_what if ts.state == TS.MEMORY and not _safe(ts)]
        for ts in list(asked):
            if ts not in ws.has_what or _safe(ts):
                del asked[ts]
        if not unsafe:
            held = list(ws.has_what)
            state.emit(ev.CloseWorker, worker=address, reason="retired")
            remove(state, address, "retired")
            for ts in held:  # clients would look for it there first
                for client in ts.who_wants:
                    state.report_if_done(ts, client)
            continue
        if not others:
            _refuse(state, ws, "no other worker can take its data")
            continue
        for ts in unsafe:
            target = asked.get(ts)
            if target is not None and state.workers.get(target.address) is target \
                    and not target.retiring:
                continue  # asked already
            target = orders.ask(ts)
            assert target is not None  # ``others`` hold none of the unsafe keys
            asked[ts] = target
    orders.emit(state)


def _safe(ts: TaskState) -> bool:
    return any(not w.retiring for w in ts.who_has)


def _refuse(state: SchedulerState, ws: WorkerState, reason: str) -> None:
    ws.retiring = False
    del state.retiring[ws.address]
    state.emit(ev.RetirementRefused, worker=ws.address, reason=reason)
    state.queue.note_freed(ws)
    for ts in list(state.no_worker):  # it may run tasks again
        if ts.state == TS.NO_WORKER:
            state.place(ts)
