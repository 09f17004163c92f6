"""Work stealing: idle workers take the last-to-run tasks of busy ones.

On each ``Tick`` every idle worker (fewer tasks, counting those already asked for it,
than threads; not paused) looks at the busy ones (more tasks than threads, or paused
with tasks queued: those first), most loaded first, and asks for the queued task that
would run last there when moving its inputs costs less than waiting for the victim's
queue. Idle workers take turns, one task each, until none can take one more; each turn
counts the tasks chosen before it (seconds per thread added to the thief, removed from
the victim), so thieves fill up to the victims' level in one tick rather than by one
task a tick: a worker that joins a busy cluster (adaptive scaling added it) is busy at
once. Loads here are summed from the durations learnt so far, not read from the
workers' ``occupancy``, which keeps the estimates made when the tasks were queued (a
burst sent before its first task finished would look as short as the default guess).
The victim answers (``StealResponse``): only a task that has not started comes back.
At most ``max_in_flight`` requests are outstanding at once.

Pure: chooses and remembers requests; the state machine sends them and moves tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from corral.basic_types import Key
from corral.scheduler.placement import Placement
from corral.scheduler.records import TaskState, WorkerState


class Stealing:
    def __init__(self, placement: Placement, *, max_in_flight: int) -> None:
        self.placement = placement
        self.max_in_flight = max_in_flight
        self.in_flight: dict[Key, str] = {}  # key → intended thief

    def choose(self, workers: Iterable[WorkerState]) -> list[tuple[WorkerState, TaskState]]:
        """The (victim, task) pairs to ask for now; each is remembered as in flight."""
        workers = list(workers)
        inbound = Counter(self.in_flight.values())
        idle = [w for w in workers
                if w.queued() + inbound[w.address] < w.nthreads and not w.paused]
        if not idle:
            return []
        busy = [w for w in workers if w.queued() > w.nthreads
                or (w.paused and w.queued() > len(w.executing))]
        if not busy:
            return []
        turn = _Round(self, busy)
        chosen: list[tuple[WorkerState, TaskState]] = []
        while idle:
            again = []
            for thief in idle:
                if len(self.in_flight) >= self.max_in_flight:
                    return chosen
                pair = turn.take_for(thief)
                if pair is not None:
                    chosen.append(pair)
                    again.append(thief)
            idle = again
        return chosen

    def answered(self, key: Key) -> str | None:
        """The victim answered for ``key``: the thief it was meant for, if any."""
        return self.in_flight.pop(key, None)

    def forget(self, key: Key) -> None:
        self.in_flight.pop(key, None)


class _Round:
    """The steals of one ``choose``: loads as they will be once the chosen tasks moved."""

    def __init__(self, stealing: Stealing, busy: list[WorkerState]) -> None:
        self.stealing = stealing
        self.busy = busy
        self.base: dict[WorkerState, float] = {}  # seconds per thread before this round
        self.gained: dict[WorkerState, float] = {}  # seconds per thread, by thief
        self.lost: dict[WorkerState, float] = {}  # seconds per thread, by victim
        self.taken: Counter[WorkerState] = Counter()  # tasks, by victim
        self.queues: dict[WorkerState, list[TaskState]] = {}  # victims', run-last last

    def load(self, ws: WorkerState) -> float:
        """Seconds per thread of the tasks it has, with this round's steals."""
        base = self.base.get(ws)
        if base is None:
            estimate = self.stealing.placement.estimate
            base = self.base[ws] = sum(estimate(t) for t in ws.processing
                                       if t not in ws.long_running) / ws.nthreads
        return base + self.gained.get(ws, 0.0) - self.lost.get(ws, 0.0)

    def take_for(self, thief: WorkerState) -> tuple[WorkerState, TaskState] | None:
        """The next task ``thief`` asks for, from the most loaded victim that has one."""
        for victim in sorted(self.busy, key=lambda w: (w.paused, self.load(w)), reverse=True):
            ts = self._one(victim, thief)
            if ts is not None:
                seconds = self.stealing.placement.estimate(ts)
                self.gained[thief] = self.gained.get(thief, 0.0) + seconds / thief.nthreads
                self.lost[victim] = self.lost.get(victim, 0.0) + seconds / victim.nthreads
                self.taken[victim] += 1
                self.stealing.in_flight[ts.key] = thief.address
                return victim, ts
        return None

    def _one(self, victim: WorkerState, thief: WorkerState) -> TaskState | None:
        left = victim.queued() - self.taken[victim]
        if left <= (len(victim.executing) if victim.paused else victim.nthreads):
            return None
        placement = self.stealing.placement
        queue = self.queues.get(victim)
        if queue is None:
            in_flight = self.stealing.in_flight
            queue = self.queues[victim] = sorted(
                (t for t in victim.processing if t.key not in in_flight
                 and t not in victim.long_running and t not in victim.executing),
                key=lambda t: t.priority)
        for i in range(len(queue) - 1, -1, -1):  # the one that would run last first
            ts = queue[i]
            if not placement.may_run(ts, thief):
                continue
            moving = placement.start_time(ts, thief) - thief.load()  # its inputs' transfer
            if not victim.paused and self.load(thief) + moving >= self.load(victim):
                return None
            del queue[i]
            return ts
        return None
