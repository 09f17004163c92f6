"""``client.replicate``: more copies of keys in memory, on more workers.

* ``Replicate`` names keys, how many workers should hold each (``n``; 0: every worker
  allowed) and the workers allowed (addresses; none: any). Workers that are retiring
  are never chosen.
* For each key in memory held by fewer than that many allowed workers, the missing
  copies go to the allowed workers that do not hold it yet, those holding the fewest
  bytes first (counting what they were just asked for); each chosen worker gets one
  ``AcquireReplicas`` naming all its keys. The copies arrive as ``AddKeys``, as those
  of a retiring worker's data do, and are freed with the key.
* Keys that are not in memory (pending, erred, unknown) are left alone; extra copies
  beyond ``n`` are not dropped (dask's ``replicate`` removes them; corral frees a key's
  copies only when nobody wants the key).
* The work is proportional to the keys named times the workers allowed.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from corral.basic_types import Key
from corral.scheduler import events as ev
from corral.scheduler.records import TS, TaskState, WorkerState

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState


def copies_wanted(state: SchedulerState, n: int,
                  workers: tuple[str, ...]) -> tuple[list[WorkerState], int]:
    """The workers allowed to hold copies, and how many of them should hold each key."""
    pool = ([state.workers[a] for a in workers if a in state.workers] if workers
            else list(state.workers.values()))
    allowed = [ws for ws in pool if not ws.retiring]
    return allowed, (len(allowed) if n <= 0 else min(n, len(allowed)))


def replicate(state: SchedulerState, s: ev.Replicate) -> None:
    allowed, copies = copies_wanted(state, s.n, s.workers)
    orders = CopyOrders(allowed)
    for key in s.keys:
        ts = state.tasks.get(key)
        if ts is None or ts.state != TS.MEMORY or not ts.who_has:
            continue
        missing = copies - sum(1 for ws in allowed if ws in ts.who_has)
        while missing > 0 and orders.ask(ts) is not None:
            missing -= 1
    orders.emit(state)


class CopyOrders:
    """Copies to ask workers for (here, and for retiring workers' keys): each from the
    least filled of ``workers`` (bytes held plus bytes asked for; join order breaks
    ties) that neither holds the key nor was asked for it; one ``AcquireReplicas`` per
    worker in the end."""

    def __init__(self, workers: list[WorkerState]) -> None:
        self._fill = [(ws.nbytes, order, ws) for order, ws in enumerate(workers)]
        heapq.heapify(self._fill)
        self._who_has: dict[WorkerState, dict[Key, tuple[str, ...]]] = {}
        self._nbytes: dict[WorkerState, dict[Key, int]] = {}

    def ask(self, ts: TaskState) -> WorkerState | None:
        """The worker now asked to copy ``ts``; None if every one has it or was asked."""
        skipped, chosen = [], None
        while self._fill and chosen is None:
            filled, order, ws = heapq.heappop(self._fill)
            if ws in ts.who_has or ts.key in self._who_has.get(ws, ()):
                skipped.append((filled, order, ws))
                continue
            chosen = ws
            heapq.heappush(self._fill, (filled + ts.nbytes, order, ws))
            self._who_has.setdefault(ws, {})[ts.key] = tuple(w.address for w in ts.who_has)
            self._nbytes.setdefault(ws, {})[ts.key] = ts.nbytes
        for item in skipped:
            heapq.heappush(self._fill, item)
        return chosen

    def emit(self, state: SchedulerState) -> None:
        for ws, who_has in self._who_has.items():
            state.emit(ev.AcquireReplicas, worker=ws.address, who_has=who_has,
                       nbytes=self._nbytes[ws])
