"""Root-task queuing: root-ish tasks wait on the scheduler until a worker has a free slot.

Rules
-----
* Sending every ready task at once is right for a task with inputs (it runs where its
  inputs are, and its inputs are freed when it finishes), but a graph with 100 000
  roots would then fill every worker's memory with root outputs before any reduction
  ran. So *root-ish* tasks are held here, in ``queued``, and handed out as threads free
  up: a worker has at most ``max(ceil(nthreads * saturation), 1)`` tasks holding or
  waiting for a thread slot (seceded ones do not count), the ``worker-saturation``
  setting (default 1.1; ``inf`` turns queuing off).
* Short tasks: ``ceil(nthreads * saturation)`` tasks cannot keep a thread busy across a
  round trip to the scheduler (a task finishes on the worker, the scheduler hears of it
  and sends the next: a few milliseconds through both batched streams) when each runs
  for 50 µs: the thread then idles most of the time. So once the tasks of the function
  first in line have been seen to finish, a worker may hold as many as run in
  ``SHORT_WORK`` seconds per thread, as long as their results would fill less than
  ``SMALL_RESULTS`` bytes per thread (means measured so far, per function name; at most
  ``MAX_PER_THREAD``). What roots may run ahead of their reductions stays bounded, by
  bytes instead of by count; tasks longer than ``SHORT_WORK``, or with results of
  ``SMALL_RESULTS``, are held at the saturation exactly. Such a worker is topped up once
  half of what it may hold beyond the saturation is free (``refill_at``), a batch per
  round trip rather than one task per finished one: it still holds ``SHORT_WORK / 2``
  of work when the batch leaves.
* Root-ish (``is_rootish``): no worker or resource restrictions, and either no inputs,
  or fewer than 5 inputs, under ``SMALL_INPUTS`` bytes in all, each shared by more than
  twice the cluster's threads: the member of a large group that depends on a few small
  shared things (dask's rule, read from the task's own inputs instead of a task group).
* Handed out in priority order (the graph's: user priority, submission, depth first),
  to the least loaded worker with a free slot; paused and retiring workers get none.
* Slots free up when a task leaves a worker (finished, erred, stolen, released), when
  one secedes, a worker joins or resumes: those workers are noted (``freed``), and the
  state machine fills them once per ``handle`` call, so new roots leave in the same
  batch as the completions that made room for them.

Pure: an index and arithmetic. The state machine makes the transitions.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Any

from corral.scheduler.records import TaskState, WorkerState

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState


# A queued task goes to whichever worker frees up first, wherever its inputs are: only
# worth it when they are cheap to move (a seed, a small array), not a scattered dataset.
SMALL_INPUTS = 1 << 20
# Short tasks with small results: a worker may hold as many as run in this many seconds
# per thread (about a round trip to the scheduler under load), if their results fill
# under SMALL_RESULTS bytes per thread, and never more than MAX_PER_THREAD per thread.
SHORT_WORK = 0.02
SMALL_RESULTS = 1 << 20
MAX_PER_THREAD = 256


def parse_saturation(value: Any) -> float:
    """``worker-saturation`` as a float > 0 (``inf`` allowed); a clear error otherwise."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        number = math.nan
    if not number > 0:  # NaN too
        raise ValueError(f"worker-saturation must be a number > 0 (or inf to turn root-task "
                         f"queuing off), got {value!r}")
    return number


class Queue:
    def __init__(self, saturation: float,
                 durations: dict[str, tuple[float, int]] | None = None) -> None:
        self.saturation = parse_saturation(saturation)
        self.enabled = math.isfinite(self.saturation)
        # (priority, sequence, task): a heap with lazy deletion. ``_entry`` maps each
        # queued task to the sequence number of its live entry.
        self._heap: list[tuple[tuple[float, ...], int, TaskState]] = []
        self._entry: dict[TaskState, int] = {}
        self._seq = itertools.count()
        # Every worker with a free slot is here (and maybe some without: dropped when
        # found full), so filling costs what changed, not a walk over every worker.
        self.freed: dict[WorkerState, None] = {}
        self.total_nthreads = 0
        # function name -> (total seconds, tasks): ``Placement.durations``, learnt there
        self.durations = {} if durations is None else durations
        # function name -> (total bytes of results, tasks seen to finish)
        self.result_bytes: dict[str, tuple[int, int]] = {}
        self.granted = 0  # ``per_thread`` when the workers were last filled
        # Tasks queued or dropped since the workers were last filled, or a larger
        # ``per_thread`` learnt: with this false and no worker freed, there is nothing
        # to fill (most stimuli).
        self.changed = False

    def __len__(self) -> int:
        return len(self._entry)

    def __contains__(self, ts: TaskState) -> bool:
        return ts in self._entry

    def __iter__(self) -> Any:
        return iter(self._entry)

    # -- deciding -----------------------------------------------------------------------

    def is_rootish(self, ts: TaskState) -> bool:
        if not self.enabled or ts.restrictions is not None or ts.resources:
            return False
        deps = ts.dependencies
        if not deps:
            return True
        if len(deps) >= 5:
            return False
        wide = 2 * self.total_nthreads
        return (all(len(d.dependents) > wide for d in deps)
                and sum(d.nbytes for d in deps) < SMALL_INPUTS)

    def limit(self, ws: WorkerState, per_thread: int = 0) -> int:
        """Tasks ``ws`` may hold; ``per_thread``: what ``per_thread`` gave for the task
        first in line."""
        return max(math.ceil(ws.nthreads * self.saturation), 1, ws.nthreads * per_thread)

    def per_thread(self) -> int:
        """Tasks like the one first in line a thread may hold for ``SHORT_WORK``
        seconds of work with results under ``SMALL_RESULTS``; 0 if unknown or none."""
        first = self.first()
        sized = None if first is None else self.result_bytes.get(first.name)
        timed = None if first is None else self.durations.get(first.name)
        if sized is None or timed is None:
            return 0
        (nbytes, sized_count), (seconds, timed_count) = sized, timed
        by_time = SHORT_WORK * timed_count / seconds
        by_bytes = SMALL_RESULTS * sized_count / nbytes if nbytes > 0 else MAX_PER_THREAD
        # (a sum of float durations drifts: 20 tasks of 1 ms must allow 20, not 19)
        return int(min(by_time, by_bytes, MAX_PER_THREAD) * (1 + 1e-9))

    def refill_at(self, ws: WorkerState, per_thread: int) -> int:
        """Free slots ``ws`` needs before it takes more: 1 at the saturation, half of
        what short tasks allow beyond it."""
        beyond = self.limit(ws, per_thread) - self.limit(ws)
        return max(1, beyond // 2)

    def slots(self, ws: WorkerState, per_thread: int | None = None) -> int:
        """Root-ish tasks ``ws`` may take now."""
        if not ws.takes_tasks:
            return 0
        if per_thread is None:
            per_thread = self.per_thread()
        return self.limit(ws, per_thread) - ws.queued()

    def finished(self, name: str, nbytes: int) -> None:
        """A task of ``name`` left a result of ``nbytes`` (its duration is learnt by
        ``Placement``)."""
        if self.enabled:
            total, count = self.result_bytes.get(name, (0, 0))
            self.result_bytes[name] = (total + nbytes, count + 1)
            if self._entry and self.per_thread() > self.granted:
                self.changed = True  # every worker may hold more

    # -- the index ----------------------------------------------------------------------

    def push(self, ts: TaskState) -> None:
        seq = next(self._seq)
        self._entry[ts] = seq
        self.changed = True
        heapq.heappush(self._heap, (ts.priority, seq, ts))

    def discard(self, ts: TaskState) -> None:
        self._entry.pop(ts, None)
        self.changed = True
        if not self._entry:
            self._heap.clear()  # drop the stale entries in one go

    def first(self) -> TaskState | None:
        """The queued task of first priority, left on the queue; None if empty."""
        heap, entry = self._heap, self._entry
        while heap:
            _, seq, ts = heap[0]
            if entry.get(ts) == seq:
                return ts
            heapq.heappop(heap)  # stale
        return None

    def pop(self) -> TaskState | None:
        """The queued task of first priority, taken off the queue; None if empty."""
        heap, entry = self._heap, self._entry
        while heap:
            _, seq, ts = heapq.heappop(heap)
            if entry.get(ts) == seq:
                del entry[ts]
                return ts
        return None

    # -- workers ------------------------------------------------------------------------

    def worker_joined(self, ws: WorkerState) -> None:
        self.total_nthreads += ws.nthreads
        self.freed[ws] = None

    def worker_left(self, ws: WorkerState) -> None:
        self.total_nthreads -= ws.nthreads
        self.freed.pop(ws, None)

    def note_freed(self, ws: WorkerState) -> None:
        if self.enabled and self.slots(ws, self.granted) >= self.refill_at(ws, self.granted):
            self.freed[ws] = None

    def takers(self, workers: dict[str, WorkerState],
               per_thread: int) -> list[tuple[WorkerState, int]]:
        """The noted workers that have free slots, least loaded first, with how many;
        workers found full (or gone) are no longer noted."""
        if not self._entry or not self.freed:
            return []
        found = []
        for ws in list(self.freed):
            n = self.slots(ws, per_thread) if workers.get(ws.address) is ws else 0
            if n >= self.refill_at(ws, per_thread):  # (always 1 or more)
                found.append((ws, n))
            else:
                del self.freed[ws]
        found.sort(key=lambda p: (p[0].queued() / p[0].nthreads, p[0].address))
        return found


def fill_slots(state: SchedulerState) -> None:
    """Hand queued tasks, first priority first, to the workers with free slots."""
    queue = state.queue
    if not queue.freed and not queue.changed:
        return
    queue.changed = False
    while queue:
        per_thread = queue.per_thread()
        if per_thread > queue.granted:  # the task first in line is shorter: all may take more
            queue.freed.update(dict.fromkeys(state.workers.values()))
        queue.granted = per_thread
        takers = queue.takers(state.workers, per_thread)
        if not takers:
            return
        for ws, free in takers:
            for _ in range(free):
                ts = queue.pop()
                if ts is None:
                    return
                state.assign(ts, ws)
