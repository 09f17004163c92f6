"""Read-only views of a ``SchedulerState``: answers for clients and the dashboard, and
the consistency check tests run after every stimulus.

Nothing here changes the state; ``SchedulerState``'s methods of the same names call these.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from corral.basic_types import Key
from corral.scheduler.records import ACTIVE, TS

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState


def who_has(state: SchedulerState, keys: Iterable[Key] | None = None) -> dict[Key, list[str]]:
    tasks = state.tasks
    chosen = tasks.values() if keys is None else filter(None, map(tasks.get, keys))
    return {ts.key: sorted(w.address for w in ts.who_has) for ts in chosen
            if keys is not None or ts.who_has}


def has_what(state: SchedulerState) -> dict[str, list[Key]]:
    return {a: [t.key for t in w.has_what] for a, w in state.workers.items()}


def info(state: SchedulerState) -> dict[str, Any]:
    by_state: dict[str, int] = defaultdict(int)
    for ts in state.tasks.values():
        by_state[ts.state.value] += 1
    workers = {
        a: {"nthreads": w.nthreads, "memory_limit": w.memory_limit, "name": w.name,
            "processing": len(w.processing), "keys": len(w.has_what), "nbytes": w.nbytes,
            "paused": w.paused}
        for a, w in state.workers.items()
    }
    return {"workers": workers, "tasks": dict(by_state)}


def validate(state: SchedulerState) -> None:
    """Assert every invariant that ties tasks, workers and the indexes together."""
    counted = Counter((t.name, t.state) for t in state.tasks.values() if t.state != TS.RELEASED)
    assert state.counts == dict(counted), (state.counts, counted)
    no_worker = [t for t in state.tasks.values() if t.state == TS.NO_WORKER]
    assert set(state.no_worker) == set(no_worker), "no-worker index out of date"
    assert all(state.tasks.get(t.key) is t for t in state.no_worker)
    queued = {t for t in state.tasks.values() if t.state == TS.QUEUED}
    assert set(state.queue) == queued, "queue out of date"
    if state.queue:  # tasks wait only while no worker is due to take more
        q = state.queue
        assert all(q.slots(w, q.granted) < q.refill_at(w, q.granted)
                   for w in state.workers.values())
    assert not state.pending_compute, "tasks left set aside after a stimulus"
    for key, ts in state.tasks.items():
        assert ts.key == key
        if ts.state == TS.PROCESSING:
            assert ts.processing_on is not None, key
            assert ts in ts.processing_on.processing, key
            assert state.workers.get(ts.processing_on.address) is ts.processing_on, key
        else:
            assert ts.processing_on is None, key
        if ts.state == TS.MEMORY:
            assert ts.who_has, key
        for ws in ts.who_has:
            assert ts in ws.has_what, key
            assert ws.address in state.workers, key
        if ts.state == TS.WAITING:
            assert ts.waiting_on, key
        for dts in ts.waiting_on:
            assert dts in ts.dependencies, key
            assert dts.state != TS.MEMORY, key
        for dts in ts.dependencies:
            assert ts in dts.dependents, key
            assert state.tasks.get(dts.key) is dts, key
        active = sum(d.state in ACTIVE for d in ts.dependents)
        assert ts.active_dependents == active, (key, ts.active_dependents, active)
    # checkpoints: each is pinned by exactly the results in memory that count on it
    pins = Counter(c for t in state.tasks.values() for c in t.anchors)
    assert all(t.state == TS.MEMORY for t in state.tasks.values() if t.anchors)
    assert {t for t in state.tasks.values() if t.checkpoint} == set(state.checkpoints.pins)
    assert all(state.checkpoints.pins[c] == pins[c] for c in state.checkpoints.pins), pins
    assert not state.checkpoints.unpinned, "checkpoints left unsettled after a stimulus"
    in_flight = Counter(t.name for w in state.workers.values() for t in w.processing)
    assert state.placement.in_flight == dict(in_flight), (state.placement.in_flight, in_flight)
    for ws in state.workers.values():
        for ts in ws.processing:
            assert ts.processing_on is ws
            assert ts.state == TS.PROCESSING
        for ts in ws.has_what:
            assert ws in ts.who_has
        assert ws.executing <= ws.processing.keys()
        assert ws.long_running <= ws.executing
        assert all(ws.processing[t] == 0.0 for t in ws.long_running)
        assert abs(ws.occupancy - sum(ws.processing.values())) < 1e-6 * (1 + ws.occupancy)
