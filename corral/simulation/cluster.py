"""A cluster in virtual time: the real state machines, simulated threads and links.

Theory of operation
-------------------
* One ``SchedulerState`` and one ``WorkerState`` per worker, the very classes the
  servers run, driven only through ``handle``. Everything around them is simulated:
  a worker's threads (an ``Execute`` finishes after the task's duration), its links
  (a ``GatherDep`` lands after ``2 * latency + nbytes / bandwidth``), the batched
  streams (a message reaches the other end ``batch_interval + latency`` after the first
  one of its batch was queued, in order), the scheduler's ``Tick``.
* Events wait in one heap ordered by (virtual time, sequence number): there are no
  threads, sockets or sleeps, and the same seed gives the same run, down to the bytes of
  the stimulus log (``stimulus_log``).
* Workers die (``kill``: their threads and transfers vanish, the scheduler hears
  ``RemoveWorker`` and tells every other worker), join (``join``) and retire
  (``retire``: the scheduler moves their data away, then drops them) at given times;
  or ``adapt`` decides, every ``interval``, with adaptive scaling's own policy
  (``corral.deploy.adaptive``) on the scheduler's own ``workload``.
"""

from __future__ import annotations

import heapq
import itertools
import pickle
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corral import messages as msgs
from corral.basic_types import Key
from corral.deploy.adaptive import AdaptivePolicy, AdaptOptions
from corral.scheduler import events as sev
from corral.scheduler.state import SchedulerState
from corral.scheduler.workload import workload
from corral.simulation import wire
from corral.simulation.graphs import Graph
from corral.worker import events as wev
from corral.worker.state import WorkerState

CLIENT = "simulated-client"


@dataclass
class SimWorker:
    address: str
    state: WorkerState
    data: set[Key] = field(default_factory=set)  # what its data store holds
    to_scheduler: list[wev.SendToScheduler] = field(default_factory=list)  # batch being built
    inbox: list[wev.Stimulus] = field(default_factory=list)  # scheduler's batch to it
    alive: bool = True


@dataclass
class Summary:
    """What a run did, in virtual time, and what it cost in real time."""

    makespan: float = 0.0  # virtual seconds until the last wanted key was reported
    wanted: int = 0
    done: int = 0  # wanted keys reported in memory
    erred: int = 0  # wanted keys reported erred
    executed: int = 0  # task executions that finished (recomputations included)
    transfers: int = 0
    transferred_bytes: int = 0
    steal_requests: int = 0
    workers_killed: int = 0
    workers_joined: int = 0
    workers_retired: int = 0
    peak_workers: int = 0
    stimuli: int = 0  # stimuli fed to the scheduler
    scheduler_cpu_s: float = 0.0  # CPU time inside SchedulerState.handle
    wall_s: float = 0.0
    cpu_s: float = 0.0
    stalled: bool = False  # stopped because nothing could happen any more

    def lines(self) -> list[str]:
        return [f"{name:18} {value:,.3f}" if isinstance(value, float) else
                f"{name:18} {value:,}" if isinstance(value, int) and not isinstance(value, bool)
                else f"{name:18} {value}" for name, value in vars(self).items()]


class Simulation:
    """A scheduler and ``workers`` simulated workers, in virtual time from 0."""

    def __init__(
        self,
        workers: int = 10,
        *,
        nthreads: int = 1,
        seed: int = 0,
        latency: float = 0.001,
        bandwidth: float = 1e9,
        batch_interval: float = 0.002,
        tick_interval: float = 0.1,
        record: bool = False,
        max_idle_ticks: int = 1000,
        **scheduler_options: Any,
    ) -> None:
        self.rng = random.Random(seed)
        self.latency, self.bandwidth = latency, bandwidth
        self.batch_interval, self.tick_interval = batch_interval, tick_interval
        self.nthreads = nthreads
        self.max_idle_ticks = max_idle_ticks
        self.scheduler_options = scheduler_options
        self.scheduler = SchedulerState(**scheduler_options)
        self.workers: dict[str, SimWorker] = {}
        self.now = 0.0
        self.durations: dict[Key, float] = {}
        self.nbytes: dict[Key, int] = {}
        self.wanted: set[Key] = set()
        self.reported: dict[Key, str] = {}  # wanted key → "memory" or "erred"
        # (stimuli fed in one handle call, the actions that came out), if recording
        self.log: list[tuple[tuple[sev.Stimulus, ...], list[sev.Action]]] | None = (
            [] if record else None)
        self.summary = Summary()
        self.executions: Counter[str] = Counter()  # worker address → tasks it finished
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._names = itertools.count()
        self._idle_ticks = 0
        self._dropped: set[str] = set()
        self.policy: AdaptivePolicy | None = None
        self.worker_counts: list[tuple[float, int]] = []  # (time, workers) as they change
        for _ in range(workers):
            self._add_worker(nthreads)

    # -- scripting a run ----------------------------------------------------------------

    def submit(self, graph: Graph, at: float = 0.0) -> None:
        """The client sends ``graph`` at virtual time ``at`` and wants its wanted keys."""
        self.durations.update(graph.durations)
        self.nbytes.update(graph.nbytes)
        self.wanted.update(graph.wanted)
        self.summary.wanted = len(self.wanted)
        self._at(at, self._update_graph, graph)

    def kill(self, at: float, address: str | None = None) -> None:
        """A worker (``address``, or one chosen by the seeded RNG) dies at ``at``."""
        self._at(at, self._kill, address)

    def join(self, at: float, nthreads: int | None = None) -> None:
        """A new worker joins at ``at``."""
        self._at(at, self._join, nthreads or self.nthreads)

    def retire(self, at: float, address: str) -> None:
        """Retire the worker at ``address`` at ``at``, gracefully (its data moves first)."""
        self._at(at, self._retire, (address,))

    def adapt(self, options: AdaptOptions, interval: float = 1.0) -> None:
        """Scale with adaptive scaling's policy: every ``interval`` from ``interval`` on,
        join or retire workers as ``AdaptivePolicy.decide`` says (workers join at once)."""
        self.policy = AdaptivePolicy(options, threads_per_worker=self.nthreads)
        self._at(interval, self._adapt, interval)

    def run(self, until: float = float("inf")) -> Summary:
        """Run until every wanted key is reported, nothing can happen, or ``until``."""
        wall, cpu = time.perf_counter(), time.process_time()
        self._at(self.tick_interval, self._tick)
        queue = self._queue
        while queue and not self._finished():
            when, _, fn, args = heapq.heappop(queue)
            if when > until:
                heapq.heappush(queue, (when, next(self._seq), fn, args))
                break
            self.now = when
            fn(*args)
        self.summary.wall_s += time.perf_counter() - wall
        self.summary.cpu_s += time.process_time() - cpu
        return self.summary

    def stimulus_log(self) -> bytes:
        """The stimuli fed to the scheduler, serialised (``record=True``)."""
        assert self.log is not None, "Simulation(record=True) keeps the log"
        return pickle.dumps([stimuli for stimuli, _ in self.log], protocol=5)

    def replay(self) -> list[list[sev.Action]]:
        """Feed the recorded stimuli to a fresh scheduler; the actions it answers with."""
        assert self.log is not None, "Simulation(record=True) keeps the log"
        fresh = SchedulerState(**self.scheduler_options)
        return [fresh.handle(*stimuli) for stimuli, _ in self.log]

    # -- the event loop's parts ---------------------------------------------------------

    def _at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn, args))

    def _finished(self) -> bool:
        return bool(self.wanted) and len(self.reported) == len(self.wanted)

    def _sid(self, origin: str) -> str:
        return f"{origin}-{next(self._ids)}"

    def _new_id(self) -> str:
        return self._sid("sim")

    def _to_scheduler(self, *stimuli: sev.Stimulus) -> None:
        """Feed the scheduler and carry out its actions, timing only the state machine."""
        start = time.process_time()
        actions = self.scheduler.handle(*stimuli)
        self.summary.scheduler_cpu_s += time.process_time() - start
        self.summary.stimuli += len(stimuli)
        if self.log is not None:
            self.log.append((stimuli, actions))
        for action in actions:
            message = wire.to_worker(action)
            if message is not None:
                if isinstance(action, msgs.StealRequest):
                    self.summary.steal_requests += 1
                self._send_to_worker(*message)
            elif isinstance(action, sev.DropWorker):
                self._drop(action.worker, action.stimulus_id, action.graceful)
            elif isinstance(action, sev.ReportKeyInMemory | sev.ReportTaskErred):
                if action.key in self.wanted and action.key not in self.reported:
                    done = isinstance(action, sev.ReportKeyInMemory)
                    self.reported[action.key] = "memory" if done else "erred"
                    self.summary.done += done
                    self.summary.erred += not done
                    self.summary.makespan = self.now + self.latency

    def _send_to_worker(self, address: str, stimulus: wev.Stimulus) -> None:
        worker = self.workers.get(address)
        if worker is None:
            return  # the stream to a dead worker is gone
        if not worker.inbox:
            self._at(self.now + self.batch_interval + self.latency, self._deliver_to, worker)
        worker.inbox.append(stimulus)

    def _deliver_to(self, worker: SimWorker) -> None:
        batch, worker.inbox = worker.inbox, []
        if worker.alive:
            self._worker_handle(worker, *batch)

    def _worker_handle(self, worker: SimWorker, *stimuli: wev.Stimulus) -> None:
        for instruction in worker.state.handle(*stimuli):
            if isinstance(instruction, wev.SendToScheduler):
                if not worker.to_scheduler:
                    self._at(self.now + self.batch_interval + self.latency,
                             self._deliver_from, worker)
                worker.to_scheduler.append(instruction)
            elif isinstance(instruction, wev.Execute):
                key = instruction.key
                duration = self.durations.get(key, 0.01)
                self._at(self.now + duration, self._executed, worker, key, self.now)
            elif isinstance(instruction, wev.GatherDep):
                took = 2 * self.latency + instruction.total_nbytes / self.bandwidth
                self._at(self.now + took, self._gathered, worker, instruction.peer,
                         instruction.keys)
            elif isinstance(instruction, wev.ReleaseData):
                worker.data.difference_update(instruction.keys)

    def _deliver_from(self, worker: SimWorker) -> None:
        batch, worker.to_scheduler = worker.to_scheduler, []
        if not worker.alive:
            return  # died before the batch left
        stimuli = [s for s in (wire.to_scheduler(worker.address, m, self._new_id) for m in batch)
                   if s]
        if stimuli:
            self._to_scheduler(*stimuli)

    def _executed(self, worker: SimWorker, key: Key, start: float) -> None:
        if not worker.alive:
            return
        worker.data.add(key)
        self.summary.executed += 1
        self.executions[worker.address] += 1
        self._worker_handle(worker, wev.ExecuteSuccess(
            stimulus_id=f"execute-{key}-{self.now!r}", key=key, nbytes=self.nbytes.get(key, 0),
            typename="bytes", start=start, stop=self.now))

    def _gathered(self, worker: SimWorker, peer: str, keys: tuple[Key, ...]) -> None:
        if not worker.alive:
            return
        sid = f"gather-{peer}-{self.now!r}"
        source = self.workers.get(peer)
        if source is None or not source.alive:
            self._worker_handle(worker, wev.GatherDepFailure(
                stimulus_id=sid, peer=peer, keys=keys, reason="simulated: peer is gone"))
            return
        data = {k: self.nbytes.get(k, 0) for k in keys if k in source.data}
        worker.data.update(data)
        self.summary.transfers += 1
        self.summary.transferred_bytes += sum(data.values())
        stimuli: list[wev.Stimulus] = [wev.GatherDepSuccess(stimulus_id=sid, peer=peer, data=data)]
        missing = tuple(k for k in keys if k not in data)
        if missing:
            stimuli.append(wev.GatherDepMissing(stimulus_id=sid, peer=peer, keys=missing))
        self._worker_handle(worker, *stimuli)

    def _tick(self) -> None:
        busy = len(self._queue) > 0
        self._idle_ticks = 0 if busy else self._idle_ticks + 1
        if self._idle_ticks > self.max_idle_ticks:
            self.summary.stalled = True
            return
        self._to_scheduler(sev.Tick(stimulus_id=self._sid("tick"), now=self.now))
        self._at(self.now + self.tick_interval, self._tick)

    def _adapt(self, interval: float) -> None:
        assert self.policy is not None
        decision = self.policy.decide(workload(self.scheduler), list(self.workers))
        for _ in range(decision.target - len(self.workers)):
            self._join(self.nthreads)
        if decision.retire:
            self._retire(decision.retire)
        if not self._finished():
            self._at(self.now + interval, self._adapt, interval)

    # -- workers coming and going -------------------------------------------------------

    def _count_workers(self) -> None:
        n = len(self.workers)
        self.summary.peak_workers = max(self.summary.peak_workers, n)
        if not self.worker_counts or self.worker_counts[-1][1] != n:
            self.worker_counts.append((self.now, n))

    def _retire(self, addresses: tuple[str, ...]) -> None:
        self._to_scheduler(sev.RetireWorkers(stimulus_id=self._sid("retire"),
                                             workers=addresses))

    def _add_worker(self, nthreads: int) -> SimWorker:
        address = f"sim://worker-{next(self._names)}"
        worker = self.workers[address] = SimWorker(address, WorkerState(address, nthreads))
        self._count_workers()
        self._to_scheduler(sev.AddWorker(stimulus_id=self._sid("register-worker"),
                                         address=address, nthreads=nthreads, now=self.now))
        return worker

    def _join(self, nthreads: int) -> None:
        self._add_worker(nthreads)
        self.summary.workers_joined += 1

    def _kill(self, address: str | None) -> None:
        alive = [a for a, w in self.workers.items() if w.alive]
        if address is None and alive:
            address = self.rng.choice(alive)
        worker = self.workers.pop(address or "", None)
        if worker is None:
            return
        worker.alive = False
        self.summary.workers_killed += 1
        self._count_workers()
        # The scheduler notices when the connection closes, one latency later.
        self._at(self.now + self.latency, self._worker_gone, worker.address)

    def _worker_gone(self, address: str) -> None:
        """The scheduler sees the connection close; it answers with ``DropWorker``."""
        self._to_scheduler(sev.RemoveWorker(stimulus_id=self._sid("remove-worker"),
                                            address=address, reason="simulated death"))

    def _drop(self, address: str, stimulus_id: str, graceful: bool = False) -> None:
        """As the server: close the stream to ``address``, tell every other worker."""
        if address in self._dropped:
            return
        self._dropped.add(address)
        worker = self.workers.pop(address, None)
        if worker is not None:  # retired, or the scheduler gave up on it still running
            worker.alive = False
            self.summary.workers_retired += graceful
        self._count_workers()
        for other in self.workers:
            self._send_to_worker(other, wire.peer_removed(stimulus_id, address))

    def _update_graph(self, graph: Graph) -> None:
        self._to_scheduler(sev.UpdateGraph(
            stimulus_id=self._sid("update-graph"), client=CLIENT, tasks=tuple(graph.tasks),
            wanted=tuple(graph.wanted), now=self.now))
