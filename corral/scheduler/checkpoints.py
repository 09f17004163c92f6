"""Checkpoints: a second copy of results that would be expensive to recompute.

Why
---
A result lives on one worker. When that worker dies, the scheduler recomputes the lost
results from their lineage, and in a long chain whose intermediates were released as
soon as the next step finished, the lineage goes back to the chain's root. Under
repeated deaths (a worker killed every 1-2 s) each death undoes about as much work as
was done since the last one, and a long graph never finishes.

The rule
--------
* Every finished task gets a *lineage cost*: its measured duration (plus a fixed
  ``TASK_OVERHEAD`` for sending and reporting it) plus the lineage cost of each input
  that is not a checkpoint, i.e. the time a loss of it would take to redo. Its
  *anchors* are the nearest checkpoints its lineage reaches.
* Once the cluster has lost a worker that held data or ran tasks (``arm``; lineage
  is weighed from then on, so a healthy cluster pays nothing), a finished task whose
  lineage cost is at least ``ratio`` times what copying it costs
  (``overhead + nbytes / bandwidth``) becomes a checkpoint: another worker is asked to
  fetch a copy (``AcquireReplicas``).
* A checkpoint is kept in memory, even when no task needs it as an input, while a result
  in memory counts on it, i.e. has it among its anchors (``pins``). A checkpoint stops
  counting on its own anchors once it has two copies: so older checkpoints are freed
  as newer ones are made safe, and at most about one checkpoint per chain is kept.
* A checkpoint that loses a copy gets a new one; one that loses every copy while results
  count on it is recomputed like any needed task.

A death then redoes at most about one lineage threshold of work per chain it held,
instead of everything back to the roots.

Pure bookkeeping for ``SchedulerState``: no I/O, no clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.scheduler import events as ev
from corral.scheduler.records import NONE, TS, TaskState, WorkerState

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState

# Seconds a copy costs beyond its bytes: a message each way and a fetch on the worker.
COPY_OVERHEAD = 0.005
# Seconds running a task again costs beyond its measured run: it is sent, started and
# reported like any other (a NumPy step of 0.6 ms took 6-9 ms end to end in the chaos
# bench), so a chain of short tasks is weighed by its length, not only its run times.
TASK_OVERHEAD = 0.005


class Checkpoints:
    def __init__(self, state: SchedulerState, *, ratio: float, bandwidth: float) -> None:
        self.state = state
        self.ratio = ratio  # 0: never make checkpoints
        self.bandwidth = bandwidth
        self.armed = False  # a worker was lost: checkpoints are worth their cost
        # checkpoint -> results in memory with it among their anchors
        self.pins: dict[TaskState, int] = {}
        self.copying: dict[TaskState, str] = {}  # checkpoint -> worker asked for a copy
        self.unpinned: list[TaskState] = []  # pins fell to 0: looked at after the stimulus

    def arm(self) -> None:
        self.armed = self.ratio > 0

    # -- results ---------------------------------------------------------------------------

    def finished(self, ts: TaskState, duration: float) -> None:
        """``ts`` is in memory after running ``duration`` seconds: weigh its lineage, count
        on its anchors, and make it a checkpoint if losing it would cost enough."""
        if not self.armed:
            return  # a healthy cluster pays nothing; lineage counts from the first loss
        lineage = max(duration, 0.0) + TASK_OVERHEAD
        anchors: dict[TaskState, None] = {}
        for dts in ts.dependencies:
            if dts.checkpoint:
                anchors[dts] = None
            else:
                lineage += dts.lineage
                for cts in dts.anchors:
                    anchors[cts] = None
        ts.lineage = lineage
        self._drop_anchors(ts)  # a recomputed result: its old ones, if any
        if anchors:
            pins = self.pins
            for cts in anchors:
                pins[cts] += 1
            ts.anchors = tuple(anchors)
        if ts.checkpoint or (self.armed and lineage >= self.ratio * (
                COPY_OVERHEAD + ts.nbytes / self.bandwidth)):
            if not ts.checkpoint:
                ts.checkpoint = True
                self.pins[ts] = 0
            self._copy(ts)
            self.replica_added(ts)

    def replica_added(self, ts: TaskState) -> None:
        """A worker reported a copy of ``ts``: a checkpoint held twice is safe, and no
        longer counts on its own anchors."""
        if ts.checkpoint and ts.state == TS.MEMORY and len(ts.who_has) >= 2:
            self.copying.pop(ts, None)
            self._drop_anchors(ts)

    def leaving_memory(self, ts: TaskState) -> None:
        """``ts`` (with anchors, or a checkpoint) is released or lost."""
        self._drop_anchors(ts)
        if ts.checkpoint:
            self.copying.pop(ts, None)
            if self.pins[ts] == 0:  # nothing counts on it: no longer a checkpoint
                self._unpin(ts)

    def copy_failed(self, ts: TaskState, worker: str) -> None:
        """``worker`` could not fetch ``ts`` from a holder: ask again, with who holds it
        now (or let it go, if the last copy is gone: then it is recomputed if needed)."""
        if self.copying.get(ts) == worker:
            del self.copying[ts]
            if ts.state == TS.MEMORY and ts.who_has:
                self._copy(ts)

    def worker_removed(self, ws: WorkerState, held: list[TaskState]) -> None:
        """``ws`` is gone: checkpoints it held, or was copying, get a new copy elsewhere."""
        again = [ts for ts, target in self.copying.items() if target == ws.address]
        again += [ts for ts in held if ts.checkpoint and ts not in self.copying]
        for ts in again:
            self.copying.pop(ts, None)
            if ts.state == TS.MEMORY and len(ts.who_has) < 2:
                self._copy(ts)

    def settle(self) -> None:
        """After a stimulus: free the checkpoints nothing counts on any more (looked at
        only now, so that a result lost and recomputed within one stimulus keeps them)."""
        unpinned, state = self.unpinned, self.state
        while unpinned:
            ts = unpinned.pop()
            if not ts.checkpoint or self.pins[ts] > 0:
                continue
            if ts.state == TS.MEMORY:
                state.release_if_unneeded(ts)  # unpinned by ``leaving_memory`` if freed
            else:
                self._unpin(ts)

    # -- the parts ---------------------------------------------------------------------------

    def _copy(self, ts: TaskState) -> None:
        if ts in self.copying or len(ts.who_has) >= 2:
            return
        target = self._target(ts)
        if target is None:
            return
        self.copying[ts] = target.address
        self.state.emit(ev.AcquireReplicas, worker=target.address,
                        who_has={ts.key: tuple(w.address for w in ts.who_has)},
                        nbytes={ts.key: ts.nbytes}, priority=ts.priority)

    def _target(self, ts: TaskState) -> WorkerState | None:
        """The least-loaded worker without a copy (a scan only when that is a holder)."""
        least = self.state.placement.least_loaded()
        if least is not None and least not in ts.who_has:
            return least
        others = [w for w in self.state.workers.values() if w not in ts.who_has]
        return min(others, key=lambda w: (w.load(), w.address), default=None)

    def _drop_anchors(self, ts: TaskState) -> None:
        anchors = ts.anchors
        if not anchors:
            return
        ts.anchors = NONE
        pins, unpinned = self.pins, self.unpinned
        for cts in anchors:
            count = pins[cts] - 1
            pins[cts] = count
            if count == 0:
                unpinned.append(cts)

    def _unpin(self, ts: TaskState) -> None:
        ts.checkpoint = False
        del self.pins[ts]
        self.copying.pop(ts, None)
        self._drop_anchors(ts)
