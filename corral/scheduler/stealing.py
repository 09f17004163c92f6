"""Work stealing: idle workers take the last-to-run tasks of busy ones.

On each ``Tick`` every idle worker (fewer tasks than threads, not paused) looks at the
busy ones (more tasks than threads, or paused with tasks queued: those first), most
loaded first, and asks for the queued task that would
run last there when moving its inputs costs less than waiting for the victim's queue.
The victim answers (``StealResponse``): only a task that has not started comes back.
At most ``max_in_flight`` requests are outstanding at once.

Pure: chooses and remembers requests; the state machine sends them and moves tasks.
"""

from __future__ import annotations

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
        idle = [w for w in workers if w.queued() < w.nthreads and not w.paused]
        if not idle:
            return []
        busy = sorted((w for w in workers if w.queued() > w.nthreads
                       or (w.paused and w.queued() > len(w.executing))),
                      key=lambda w: (w.paused, w.load()), reverse=True)
        chosen: list[tuple[WorkerState, TaskState]] = []
        for thief in idle:
            for victim in busy:
                if len(self.in_flight) >= self.max_in_flight:
                    return chosen
                ts = self._one(victim, thief)
                if ts is not None:
                    chosen.append((victim, ts))
                    break
        return chosen

    def _one(self, victim: WorkerState, thief: WorkerState) -> TaskState | None:
        if victim.queued() <= (len(victim.executing) if victim.paused else victim.nthreads):
            return None
        queued = [t for t in victim.processing if t.key not in self.in_flight
                  and t not in victim.long_running and t not in victim.executing
                  and self.placement.may_run(t, thief)]
        if not queued:
            return None
        ts = max(queued, key=lambda t: t.priority)  # the one that would run last
        if not victim.paused and self.placement.start_time(ts, thief) >= victim.load():
            return None
        self.in_flight[ts.key] = thief.address
        return ts

    def answered(self, key: Key) -> str | None:
        """The victim answered for ``key``: the thief it was meant for, if any."""
        return self.in_flight.pop(key, None)

    def forget(self, key: Key) -> None:
        self.in_flight.pop(key, None)
