"""Where a ready task runs, and the bookkeeping of what each worker has queued.

A ready task goes to the running (not paused) worker with the smallest estimated start time,
``occupancy / nthreads + bytes of inputs it lacks / bandwidth``. Only the holders of its
inputs and the least-occupied worker (a lazily updated heap) are considered, so placing
a task costs O(inputs + log workers), not O(workers). Occupancy is the sum of the
estimated durations of a worker's queued tasks; durations are learnt per function name.

Pure: no I/O, no clock, no state transitions (those are ``SchedulerState``'s).
"""

from __future__ import annotations

import heapq
import itertools

from corral.scheduler.records import TaskState, WorkerState


class Placement:
    def __init__(
        self, workers: dict[str, WorkerState], *, bandwidth: float, default_duration: float
    ) -> None:
        self.workers = workers  # the state machine's own dict, shared
        self.bandwidth = bandwidth
        self.default_duration = default_duration
        self.durations: dict[str, tuple[float, int]] = {}  # name → (total seconds, count)
        # Tasks queued on some worker, by function name: with ``durations``, the work in
        # hand at today's estimates (``occupancy`` keeps those made when each was queued).
        self.in_flight: dict[str, int] = {}
        self._load_heap: list[tuple[float, int, str]] = []  # (load, tie-break, address)
        self._seq = itertools.count()
        # Other ways to name a worker (``workers=`` restrictions, ``retire_workers``):
        # by its name, and by its host (every worker there, in the order they joined).
        self.names: dict[str, str] = {}
        self.hosts: dict[str, dict[str, None]] = {}

    # -- choosing ----------------------------------------------------------------------

    def decide_worker(self, ts: TaskState) -> WorkerState | None:
        """The worker where ``ts`` would start soonest; None if none may run it."""
        if ts.restrictions is not None:
            allowed = [w for w in self.restricted_to(ts.restrictions)
                       if w.supplies(ts.resources)]
            # Only paused workers may run it: it queues there until one resumes. Even a
            # loose restriction waits for them (a shuffle's unpack task must run where
            # its pieces are): other workers only if none of its own is left.
            running = [w for w in allowed if not w.paused] or allowed
            if running or not ts.loose_restrictions:
                return min(running, key=lambda w: (self.start_time(ts, w), w.address),
                           default=None)
        if ts.resources:  # rare: worth a scan of the workers that have what it needs
            able = [w for w in self.workers.values()
                    if w.supplies(ts.resources) and w.takes_tasks]
            candidates = {w for dts in ts.dependencies for w in dts.who_has if w in able}
            least = min(able, key=WorkerState.load, default=None)
        else:
            return self._soonest(ts)
        if least is not None:
            candidates.add(least)
        return min(candidates, key=lambda w: (self.start_time(ts, w), w.address), default=None)

    def _soonest(self, ts: TaskState) -> WorkerState | None:
        """``decide_worker`` for an unrestricted task: ``start_time`` for every holder of
        an input at once, from one pass over the inputs (not one per candidate)."""
        total = 0
        local: dict[WorkerState, int] = {}  # bytes of the inputs each holder has
        for dts in ts.dependencies:
            nbytes = dts.nbytes
            total += nbytes
            for w in dts.who_has:
                if not (w.retiring or w.paused):  # ``takes_tasks``, inlined: a call a holder
                    local[w] = local.get(w, 0) + nbytes
        least = self.least_loaded()
        if least is not None and least not in local:
            local[least] = 0
        # min() by (start time, address), as a loop: no key tuple per candidate
        bandwidth, best, soonest = self.bandwidth, None, 0.0
        for w, have in local.items():
            start = w.occupancy / w.nthreads + (total - have) / bandwidth
            if best is None or start < soonest or (
                    start == soonest and w.address < best.address):
                best, soonest = w, start
        return best

    def may_run(self, ts: TaskState, ws: WorkerState) -> bool:
        if ws.retiring or not ws.supplies(ts.resources):
            return False
        return ts.restrictions is None or ws in self.restricted_to(ts.restrictions)

    # -- naming workers ------------------------------------------------------------------

    def worker_joined(self, ws: WorkerState) -> None:
        if ws.name:
            self.names.setdefault(ws.name, ws.address)
        self.hosts.setdefault(host_of(ws.address), {})[ws.address] = None

    def worker_left(self, ws: WorkerState) -> None:
        if self.names.get(ws.name) == ws.address:
            del self.names[ws.name]
        same_host = self.hosts.get(host_of(ws.address), {})
        same_host.pop(ws.address, None)
        if not same_host:
            self.hosts.pop(host_of(ws.address), None)

    def named(self, spec: str) -> list[WorkerState]:
        """The workers ``spec`` names: an address, a worker's name, or a host (every
        worker there); none if it names nothing known."""
        ws = self.workers.get(spec)
        if ws is not None:
            return [ws]
        address = self.names.get(spec)
        if address is not None and address in self.workers:
            return [self.workers[address]]
        return [self.workers[a] for a in self.hosts.get(spec, ()) if a in self.workers]

    def restricted_to(self, restrictions: frozenset[str]) -> list[WorkerState]:
        """The workers, not retiring, that a task restricted to ``restrictions`` may use."""
        allowed: dict[WorkerState, None] = {}
        for spec in restrictions:
            for ws in self.named(spec):
                if not ws.retiring:
                    allowed[ws] = None
        return list(allowed)

    def start_time(self, ts: TaskState, ws: WorkerState) -> float:
        missing = sum(d.nbytes for d in ts.dependencies if ws not in d.who_has)
        return ws.load() + missing / self.bandwidth

    def least_loaded(self) -> WorkerState | None:
        heap, workers = self._load_heap, self.workers
        while heap:
            load, _, address = heap[0]
            ws = workers.get(address)
            if (ws is not None and ws.occupancy / ws.nthreads == load  # ``load()``
                    and not (ws.retiring or ws.paused)):  # ``takes_tasks``
                return ws
            heapq.heappop(heap)  # stale entry
        return None

    # -- bookkeeping -------------------------------------------------------------------

    def set_occupancy(self, ws: WorkerState, occupancy: float) -> None:
        if occupancy < 0.0:  # rounding, as estimates are added and taken away
            occupancy = 0.0
        ws.occupancy = occupancy
        heapq.heappush(self._load_heap, (occupancy / ws.nthreads, next(self._seq), ws.address))
        if len(self._load_heap) > 4 * len(self.workers) + 1000:
            self._load_heap = [(w.load(), next(self._seq), a) for a, w in self.workers.items()]
            heapq.heapify(self._load_heap)

    def add_processing(self, ts: TaskState, ws: WorkerState) -> None:
        """``ts`` is queued on ``ws``: count its estimated duration there."""
        ts.processing_on = ws
        name = ts.name
        self.in_flight[name] = self.in_flight.get(name, 0) + 1
        duration = self.estimate_of(name)
        ws.processing[ts] = duration
        self.set_occupancy(ws, ws.occupancy + duration)

    def remove_processing(self, ts: TaskState) -> WorkerState | None:
        """``ts`` is no longer queued where it was; that worker, if any."""
        ws, ts.processing_on = ts.processing_on, None
        if ws is not None and ts in ws.processing:
            left = self.in_flight[ts.name] - 1
            if left:
                self.in_flight[ts.name] = left
            else:
                del self.in_flight[ts.name]
            self.set_occupancy(ws, ws.occupancy - ws.processing.pop(ts))
            ws.executing.discard(ts)
            ws.long_running.discard(ts)
        return ws

    def secede(self, ts: TaskState, ws: WorkerState) -> None:
        """``ts`` left its thread slot on ``ws``: it is no longer load there."""
        if ts.processing_on is ws and ts not in ws.long_running:
            ws.long_running.add(ts)
            ws.executing.add(ts)
            self.set_occupancy(ws, ws.occupancy - ws.processing[ts])
            ws.processing[ts] = 0.0

    def rejoin(self, ts: TaskState, ws: WorkerState) -> None:
        """Seceded ``ts`` holds a thread slot on ``ws`` again: load once more."""
        if ts.processing_on is ws and ts in ws.long_running:
            ws.long_running.discard(ts)
            duration = ws.processing[ts] = self.estimate(ts)
            self.set_occupancy(ws, ws.occupancy + duration)

    def estimate(self, ts: TaskState) -> float:
        return self.estimate_of(ts.name)

    def estimate_of(self, name: str) -> float:
        total, count = self.durations.get(name, (self.default_duration, 1))
        return total / count

    def record_duration(self, name: str, seconds: float) -> None:
        total, count = self.durations.get(name, (0.0, 0))
        self.durations[name] = (total + seconds, count + 1)


def host_of(address: str) -> str:
    """``'tcp://10.0.0.5:8786'`` → ``'10.0.0.5'``; ``'tls://[::1]:1'`` → ``'::1'``."""
    location = address.split("://", 1)[-1]
    host = location.rsplit(":", 1)[0] if ":" in location else location
    return host.strip("[]")


def depth_first(tasks: list[TaskState]) -> list[TaskState]:
    """Post-order from the terminal tasks: inputs first, and a chain before the next root."""
    members = set(tasks)
    order: list[TaskState] = []
    seen: set[TaskState] = set()
    terminals = [t for t in tasks if members.isdisjoint(t.dependents)]
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
            deps = [d for d in ts.dependencies if d in members and d not in seen]
            if len(deps) > 1:
                deps.sort(key=lambda d: str(d.key), reverse=True)
            stack.extend((d, False) for d in deps)
    return order
