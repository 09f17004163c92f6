"""Data moved between workers on request: ``retire_workers`` and ``replicate``.

The scheduler's rpc handlers for both: each names the workers (addresses, names or
hosts), hands the state machine one stimulus (``RetireWorkers``, ``Replicate``), whose
pure handlers decide which worker copies what (``retirement``, ``replication``), and
then waits until the copies are made or the time is up, reading the state as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral.core import Comm
from corral.core.validate import checked
from corral.scheduler import events as ev
from corral.scheduler import replication
from corral.scheduler.records import TS

if TYPE_CHECKING:
    from corral.scheduler.server import Scheduler


class DataMoves:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def handlers(self) -> dict[str, Any]:
        return {"retire_workers": self.retire_workers, "replicate": self.replicate}

    @checked
    async def retire_workers(
        self, comm: Comm | None = None, workers: list[str] | None = None,
        timeout: float = 60.0,
    ) -> dict[str, dict[str, Any]]:
        """Retire ``workers`` (addresses, names or hosts) gracefully: their data moves to
        other workers, then they close. ``{address: {"name": ...}}`` of those retired
        within ``timeout``; a worker whose data nobody can take stays (logged)."""
        scheduler, state = self.scheduler, self.scheduler.state
        named = {ws.address: ws.name for spec in workers or ()
                 for ws in state.placement.named(spec)}
        scheduler.handle(ev.RetireWorkers(stimulus_id=scheduler._ids(), workers=tuple(named)))
        await _until(lambda: not any(a in state.retiring for a in named), timeout)
        return {a: {"name": name} for a, name in named.items() if a not in state.workers}

    @checked
    async def replicate(
        self, comm: Comm | None = None, keys: list[Any] | None = None, n: int = 0,
        workers: list[str] | None = None, timeout: float = 60.0,
    ) -> dict[Any, int]:
        """Copy ``keys`` in memory until ``n`` workers (of ``workers``: addresses, names or
        hosts; 0: all of them) hold each; ``{key: workers holding it}`` once they do, or
        once ``timeout`` has passed."""
        scheduler, state = self.scheduler, self.scheduler.state
        allowed = tuple(dict.fromkeys(ws.address for spec in workers or ()
                                      for ws in state.placement.named(spec)))
        if workers and not allowed:
            raise ValueError(f"replicate: no worker is named by {workers!r}")
        wanted = tuple(keys or ())
        scheduler.handle(ev.Replicate(stimulus_id=scheduler._ids(), keys=wanted, n=n,
                                      workers=allowed))

        def done() -> bool:
            pool, copies = replication.copies_wanted(state, n, allowed)
            return all(ts.state != TS.MEMORY or sum(ws in ts.who_has for ws in pool) >= copies
                       for k in wanted if (ts := state.tasks.get(k)) is not None)

        await _until(done, timeout)
        return {k: len(ts.who_has) for k in wanted if (ts := state.tasks.get(k)) is not None}


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    """Until ``condition()`` holds, or ``timeout`` seconds; it changes as stimuli come in
    (a worker closing, copies arriving as ``AddKeys``), so it is looked at every 20 ms."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
