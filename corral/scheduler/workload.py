"""The scheduler's estimate of the work in hand, for whoever decides how many workers to
run (``corral.deploy.adaptive``): one read-only snapshot of the state machine.

What a cluster manager needs to know is how long the cluster would take with the
workers it has, and which workers it could do without. Every ready task is sent to a
worker at once, so the work in hand is the tasks queued on workers, counted by function
name (``Placement.in_flight``), times each function's mean duration so far (learnt as
tasks finish: a burst's estimate is right as soon as its first task is done, where each
worker's ``occupancy`` keeps the estimates made when its tasks were queued). Ready
tasks no worker can take (there is none, or none that may run them) wait in
``no-worker``, and root-ish tasks held on the scheduler until a thread frees up
(``queuing``) in ``queued``: both are work waiting for a thread, added apart
(``unassigned``). Memory is each worker's bytes of results against its limit.

The snapshot travels as a plain dict (``to_wire`` / ``from_wire``); both ends use these
classes. Reading it costs O(workers + function names + 200): past 100 tasks in no-worker (or
in the queue), their total is extrapolated from the first 100.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.scheduler.records import TaskState
    from corral.scheduler.state import SchedulerState

SAMPLE = 100  # tasks waiting for a worker whose durations are summed, not extrapolated


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    address: str
    name: str
    nthreads: int
    memory_limit: int  # bytes; 0: no limit
    nbytes: int  # bytes of results it holds
    occupancy: float  # estimated seconds of the tasks sent to it and not yet done
    processing: int  # tasks sent to it and not yet done
    retiring: bool  # being retired: its data moves away, it takes no new task


@dataclass(frozen=True, slots=True)
class Workload:
    workers: tuple[WorkerLoad, ...]
    processing_seconds: float  # estimated seconds of the tasks queued on workers
    unassigned: int  # ready tasks waiting for a worker (no-worker) or a thread (queued)
    unassigned_seconds: float  # their estimated durations, summed
    graphs: int = 0  # graphs received so far (the server counts them): new work arrived?

    @property
    def seconds(self) -> float:
        """Estimated seconds of work queued or running, on one thread."""
        return self.unassigned_seconds + self.processing_seconds

    @property
    def tasks(self) -> int:
        """Tasks ready or running: at most this many threads have something to do."""
        return self.unassigned + sum(w.processing for w in self.workers)

    def to_wire(self) -> dict[str, Any]:
        return {"workers": [asdict(w) for w in self.workers],
                "processing_seconds": self.processing_seconds, "unassigned": self.unassigned,
                "unassigned_seconds": self.unassigned_seconds, "graphs": self.graphs}

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> Workload:
        return cls(workers=tuple(WorkerLoad(**w) for w in msg["workers"]),
                   processing_seconds=float(msg["processing_seconds"]),
                   unassigned=int(msg["unassigned"]),
                   unassigned_seconds=float(msg["unassigned_seconds"]),
                   graphs=int(msg.get("graphs", 0)))


def workload(state: SchedulerState, *, graphs: int = 0) -> Workload:
    """The work in hand and each worker's share of it, as the scheduler estimates it."""
    workers = tuple(
        WorkerLoad(address=ws.address, name=ws.name or ws.address, nthreads=ws.nthreads,
                   memory_limit=ws.memory_limit, nbytes=ws.nbytes, occupancy=ws.occupancy,
                   processing=len(ws.processing), retiring=ws.retiring)
        for ws in state.workers.values()
    )
    placement = state.placement
    queued = sum(n * placement.estimate_of(name) for name, n in placement.in_flight.items())
    waiting = len(state.no_worker) + len(state.queue)
    seconds = (_estimated(state, state.no_worker, len(state.no_worker))
               + _estimated(state, state.queue, len(state.queue)))
    return Workload(workers=workers, processing_seconds=queued, unassigned=waiting,
                    unassigned_seconds=seconds, graphs=graphs)


def _estimated(state: SchedulerState, tasks: Iterable[TaskState], n: int) -> float:
    """The estimated durations of the ``n`` ``tasks``, summed: past ``SAMPLE`` of them,
    extrapolated from the first ``SAMPLE``."""
    sample = list(itertools.islice(tasks, SAMPLE))
    seconds = sum(map(state.placement.estimate, sample))
    if n > len(sample):
        seconds *= n / len(sample)
    return seconds
