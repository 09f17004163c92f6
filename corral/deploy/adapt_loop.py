"""``Adaptive``: the loop that carries out ``corral.deploy.adaptive``'s decisions.

Every ``interval`` seconds (the first at once): ask the scheduler for its workload, let
the policy decide, and scale up or retire. When a client sends work, look at once, and
then every tenth of ``interval`` for two intervals (looks that may only scale up):
the scheduler learns the new tasks' durations as the first ones finish, and its
estimate of the work grows with them. All the deciding is in the pure policy; this
only moves its inputs and outputs. A failed round is logged in one line and the next
one tries again: adaptive scaling outlives a scheduler that is briefly unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from corral.deploy.adaptive import AdaptivePolicy, AdaptOptions, Decision

if TYPE_CHECKING:
    from corral.deploy.spec import ClusterManager
    from corral.scheduler.workload import Workload

logger = logging.getLogger("corral.deploy")


class Adaptive:
    """Adaptive scaling of one cluster manager; ``stop()`` ends it."""

    def __init__(self, cluster: ClusterManager, options: AdaptOptions, *,
                 interval: float) -> None:
        self.cluster = cluster
        self.interval = interval
        self.policy = AdaptivePolicy(options, threads_per_worker=cluster.worker_spec.nthreads)
        # (time, decision) of every round that changed something, newest last.
        self.log: deque[tuple[float, Decision]] = deque(maxlen=1000)
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def options(self) -> AdaptOptions:
        return self.policy.options

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Begin on the running loop (the cluster's)."""
        if self._task is None and not self._stopped:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """No more rounds; one under way is cancelled (callable from the loop's thread)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        o = self.options
        logger.info("adaptive scaling between %s and %s workers", o.minimum, o.maximum)
        loop = asyncio.get_running_loop()
        next_round = loop.time()  # the first round at once
        seen: int | None = None  # graphs the scheduler had received at the last look
        eager_until = 0.0  # new work arrived: look every tenth of a round until then
        while True:
            now = loop.time()
            wait = next_round - now
            try:
                # Until the next round, or until a client sends work: then look at once.
                load = await self.cluster._workload(
                    after=seen if wait > 0 and now >= eager_until else None,
                    timeout=max(wait, 0.0))
                if seen is not None and load.graphs > seen:
                    # The first tasks of new work teach the scheduler their durations
                    # within moments: look again soon rather than a round later.
                    eager_until = loop.time() + 2 * self.interval
                seen = load.graphs
                full = loop.time() >= next_round
                if full:
                    next_round = loop.time() + self.interval
                await self._act(load, full)
                if not full:  # looks between rounds: at most ten a round
                    await asyncio.sleep(self.interval / 10)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # e.g. the scheduler is closing: try again next round
                logger.warning("adaptive scaling: %s: %s", type(e).__name__, e)
                next_round = loop.time() + self.interval
                await asyncio.sleep(self.interval)

    async def adapt(self) -> Decision:
        """One round now: decide, then scale up or retire."""
        return await self._act(await self.cluster._workload(), True)

    async def _act(self, load: Workload, full: bool) -> Decision:
        cluster = self.cluster
        planned = cluster.planned
        decision = self.policy.decide(load, planned, count=full)
        if decision.target > len(planned):
            self.log.append((time.time(), decision))
            await cluster._scale(decision.target, force=False)
        elif decision.retire:
            self.log.append((time.time(), decision))
            await cluster._retire(decision.retire)
        return decision

    def __repr__(self) -> str:
        o = self.options
        state = "running" if self.running else "stopped"
        return f"<Adaptive minimum={o.minimum} maximum={o.maximum} {state}>"


async def stop_and_wait(adaptive: Adaptive) -> None:
    """``stop()``, then wait for the round under way to end."""
    adaptive.stop()
    if adaptive._task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await adaptive._task
