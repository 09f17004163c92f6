"""How many workers a cluster should run: the adaptive scaling decision, pure.

Theory of operation
-------------------
* Every ``interval`` the cluster manager asks its scheduler for a ``Workload`` (the
  estimated seconds of the work sent to each worker and of the ready tasks waiting for
  one, the bytes each worker holds) and hands it, with the names of the workers it has
  started or asked for (``planned``, oldest first), to ``AdaptivePolicy.decide``. No
  clock, no I/O: the same snapshots give the same decisions.
* **How many.** The work should take about ``target_duration``: that many seconds of
  it per thread, so ``ceil(seconds / target_duration)`` threads, but no more than there
  are tasks to run on them; in workers of the current (or, with none, the spec's)
  threads each. Ready tasks and no worker: at least one. Results filling more than
  ``memory_fraction`` of the workers' memory limits ask for as many more workers as
  brings them back under it. The larger of the two, within ``minimum`` and
  ``maximum``, is the ``target``.
* **Up** at once: the decision's ``target`` is above ``len(planned)``. The manager
  also looks between two rounds when a client sends new work (``count=False``): such
  a look may scale up, and counts nothing towards scaling down.
* **Down** slowly and only through idle workers: when the target is below the plan,
  the candidates to stop are planned workers that have not joined yet (newest first),
  then joined workers with no task (least data first: less to move). A candidate is
  retired only once it has been one for ``wait_count`` consecutive decisions; a worker
  that gets work again, or is no longer needed gone, starts counting from zero. A busy
  worker is never chosen, so a burst's stragglers finish where they run.
* Retiring is the manager's part: ``retire_workers`` first copies what only the
  leaving worker holds to one that stays, and a worker whose data cannot move
  (``RetirementRefused``) is not stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from corral.scheduler.workload import Workload


@dataclass(frozen=True, slots=True)
class AdaptOptions:
    minimum: int = 0
    maximum: float = math.inf
    target_duration: float = 5.0  # seconds the work in hand should take
    wait_count: int = 3  # decisions a worker stays a candidate before it is retired
    memory_fraction: float = 0.6  # of the workers' memory limits, before asking for more

    def __post_init__(self) -> None:
        if self.minimum < 0 or self.maximum < self.minimum:
            raise ValueError(f"need 0 <= minimum <= maximum, got minimum={self.minimum}, "
                             f"maximum={self.maximum}")
        if self.target_duration <= 0 or self.wait_count < 1:
            raise ValueError("target_duration must be > 0 and wait_count >= 1")


@dataclass(frozen=True, slots=True)
class Decision:
    target: int  # workers wanted
    retire: tuple[str, ...] = ()  # names of planned workers to stop now
    candidates: tuple[str, ...] = field(default=(), compare=False)  # counted this time


class AdaptivePolicy:
    """The decisions of one adaptive cluster; it remembers only how many consecutive
    decisions each worker has been a candidate to stop."""

    def __init__(self, options: AdaptOptions, *, threads_per_worker: int = 1) -> None:
        self.options = options
        self.threads_per_worker = max(1, threads_per_worker)  # of workers not yet started
        self.counts: dict[str, int] = {}

    def wanted(self, load: Workload) -> int:
        """Workers the work in ``load`` asks for, within the minimum and maximum."""
        o = self.options
        workers = load.workers
        per_worker = (sum(w.nthreads for w in workers) / len(workers) if workers
                      else self.threads_per_worker)
        threads = min(math.ceil(load.seconds / o.target_duration), load.tasks)
        cpu = math.ceil(threads / per_worker)
        if load.unassigned and not cpu:
            cpu = 1
        memory = 0
        limit = sum(w.memory_limit for w in workers)
        used = sum(w.nbytes for w in workers)
        if limit and used > o.memory_fraction * limit:
            memory = math.ceil(used / (o.memory_fraction * limit / len(workers)))
        return int(min(max(cpu, memory, o.minimum), o.maximum))

    def decide(self, load: Workload, planned: Sequence[str], *, count: bool = True) -> Decision:
        """What to do now, for a cluster running (or starting) the workers ``planned``.

        ``count=False``: a look between two rounds (new work arrived): scale up if
        needed, but count no worker as idle once more."""
        target = self.wanted(load)
        surplus = len(planned) - target
        if surplus <= 0:
            self.counts.clear()
            return Decision(target)
        if not count:
            return Decision(target)
        joined = {w.name: w for w in load.workers}
        order = {name: i for i, name in enumerate(planned)}
        unarrived = [name for name in reversed(planned) if name not in joined]
        idle = sorted((w for w in load.workers
                       if w.name in order and not w.processing and not w.retiring),
                      key=lambda w: (w.nbytes, -order[w.name]))
        candidates = (*unarrived, *(w.name for w in idle))[:surplus]
        self.counts = {name: self.counts.get(name, 0) + 1 for name in candidates}
        retire = tuple(n for n in candidates if self.counts[n] >= self.options.wait_count)
        for name in retire:
            del self.counts[name]
        return Decision(target, retire, candidates)
