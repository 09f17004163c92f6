"""A worker's memory: when to spill, when to pause (pure), and the store that spills.

Theory of operation
-------------------
With a memory limit ``L`` (``corral.memory_limit``) and the thresholds of ``Thresholds``:

* *target* (0.6): the values of finished tasks ("managed" memory, measured with
  ``sizeof``) beyond ``target * L`` are written to disk, least recently used first;
* *spill* (0.7): when the process's RSS exceeds ``spill * L`` (managed data plus
  everything else, "unmanaged"), managed data is spilled until RSS would be back under
  ``target * L``, and memory the allocators keep after it was freed (glibc's heap,
  Arrow's pool) goes back to the system: without that, a worker whose data is all on
  disk could stay over its pause threshold for good;
* *pause* (0.8): above ``pause * L`` the worker starts no new task and fetches nothing;
  it still serves its data, its running tasks finish, and it resumes once RSS is back
  under the threshold; also above *spill* when spilling has failed (a full disk);
* *terminate* (0.95): the nanny restarts the worker (``corral.nanny``).

``decide`` is the pure rule; the worker state machine applies it to each
``MemoryUsage`` sample (``on_memory_usage``) and emits a ``Spill`` instruction or tells
the scheduler it is paused. The store that spills is ``corral.worker.spill``. No I/O,
no clock here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral import messages as msgs
from corral.worker import events as ev
from corral.worker.thresholds import Thresholds

__all__ = ["Decision", "Thresholds", "decide", "on_memory_usage"]

if TYPE_CHECKING:
    from corral.worker.state import WorkerState


@dataclass(frozen=True, slots=True)
class Decision:
    spill_to: int | None  # spill managed data until at most this many bytes are in memory
    paused: bool
    trim: bool = False  # over the spill threshold: give freed memory back to the system


def decide(limit: int, thresholds: Thresholds, s: ev.MemoryUsage, paused: bool) -> Decision:
    """What to do about one memory sample; pure."""
    if not limit:
        return Decision(None, False)
    target = thresholds.bytes(thresholds.target, limit)
    spill = thresholds.bytes(thresholds.spill, limit)
    pause = thresholds.bytes(thresholds.pause, limit)
    goal = float(s.managed)
    if s.managed > target:  # normally the store keeps to this itself, as values arrive
        goal = target
    if s.rss > spill:
        goal = min(goal, s.managed - (s.rss - min(target, spill)))
    keep = int(max(goal, 0))
    pausing = s.rss > pause or (s.spill_failed and s.rss > spill)
    over = s.rss > spill  # (with nothing to spill, still something to trim)
    spill_to = keep if keep < s.managed else (s.managed if over else None)
    return Decision(spill_to, pausing, trim=over)


def on_memory_usage(state: WorkerState, s: ev.MemoryUsage) -> None:
    """The worker state machine's handler of a ``MemoryUsage`` sample."""
    decision = decide(state.memory_limit, state.thresholds, s, state.paused)
    if decision.spill_to is not None:
        state._emit(ev.Spill, target=decision.spill_to, trim=decision.trim)
    if decision.paused != state.paused:
        state.paused = decision.paused
        state._tell(msgs.WorkerPaused, paused=decision.paused)
