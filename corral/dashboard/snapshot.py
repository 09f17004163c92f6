"""JSON-ready views of the scheduler's state, for the dashboard's pages and API.

Pure functions of the state machine, the server's worker records and the timeline:
no I/O, so they are tested without a network. Each is called at the dashboard's
modest rate (or per human request), never per task.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from corral.scheduler.records import TS, TaskState
from corral.scheduler.state import SchedulerState
from corral.scheduler.timeline import Record, Timeline

STATES = tuple(s.value for s in TS)


def counts_by_state(state: SchedulerState) -> dict[str, int]:
    """Tasks per state, from the state machine's running counts (no walk over tasks)."""
    counts = dict.fromkeys(STATES, 0)
    for (_, ts_state), n in state.counts.items():
        counts[ts_state.value] += n
    counts[TS.RELEASED.value] = len(state.tasks) - sum(counts.values())
    return counts


def summary(state: SchedulerState, timeline: Timeline) -> dict[str, Any]:
    counts = counts_by_state(state)
    return {
        "workers": len(state.workers),
        "threads": sum(w.nthreads for w in state.workers.values()),
        "tasks": counts,
        "finished": sum(timeline.finished.values()),
        "erred": sum(timeline.erred.values()),
        "transferred_bytes": timeline.transferred_bytes,
        "memory_bytes": sum(w.nbytes for w in state.workers.values()),
    }


def workers(
    state: SchedulerState, worker_info: Mapping[str, Mapping[str, Any]], now: float
) -> list[dict[str, Any]]:
    """One row per worker: what the state machine knows plus its last heartbeat."""
    rows = []
    for address, ws in sorted(state.workers.items()):
        info = worker_info.get(address, {})
        metrics = info.get("metrics") or {}
        memory = info.get("memory") or {}
        rows.append({
            "address": address,
            "name": info.get("name") or ws.name or address,
            "nthreads": ws.nthreads,
            "memory": number(metrics.get("memory")),
            "memory_limit": ws.memory_limit,
            "managed": number(memory.get("managed")),
            "unmanaged": number(memory.get("unmanaged")),
            "spilled": number(memory.get("spilled")),
            "paused": ws.paused,
            "cpu": number(metrics.get("cpu")),
            "executing": len(ws.executing),
            "processing": len(ws.processing),
            "queued": max(len(ws.processing) - len(ws.executing), 0),
            "keys": len(ws.has_what),
            "nbytes": ws.nbytes,
            "latency": number(metrics.get("latency")),
            "last_seen": round(now - info.get("last_seen", now), 3),
            "pid": info.get("pid"),
        })  # fmt: skip
    return rows


def progress(state: SchedulerState, timeline: Timeline) -> list[dict[str, Any]]:
    """Per function name: tasks waiting, processing, in memory, erred, and finished so far."""
    by_name: dict[str, Counter[str]] = defaultdict(Counter)
    for (name, ts_state), n in state.counts.items():
        by_name[name][ts_state.value] += n
    for name in timeline.finished:
        by_name[name]
    rows: list[dict[str, Any]] = []
    for name, counts in by_name.items():
        rows.append({
            "name": name,
            "waiting": counts["waiting"] + counts["no-worker"] + counts["queued"],
            "processing": counts["processing"],
            "memory": counts["memory"],
            "erred": counts["erred"],
            "finished": timeline.finished.get(name, 0),
        })  # fmt: skip
    rows.sort(key=lambda r: (-(r["waiting"] + r["processing"]), r["name"]))
    return rows


def records(items: Iterable[Record]) -> list[list[Any]]:
    """Task-stream records as compact rows: kind, key, name, worker, start, stop, nbytes."""
    return [list(r) for r in items]


def tasks(state: SchedulerState, status: str | None = None, limit: int = 1000) -> dict[str, Any]:
    chosen = [ts for ts in state.tasks.values() if status is None or ts.state.value == status]
    return {
        "total": len(chosen),
        "tasks": [_brief(ts) for ts in chosen[:limit]],
    }


def find_task(state: SchedulerState, key: str) -> TaskState | None:
    """The task whose key prints as ``key`` (keys may be tuples; URLs carry strings)."""
    ts = state.tasks.get(key)
    if ts is not None:
        return ts
    return next((t for t in state.tasks.values() if str(t.key) == key), None)


def task_detail(state: SchedulerState, key: str) -> dict[str, Any] | None:
    ts = find_task(state, key)
    if ts is None:
        return None
    detail = _brief(ts)
    detail.update(
        type=ts.typename,
        nbytes=ts.nbytes,
        who_has=sorted(w.address for w in ts.who_has),
        dependencies=[_brief(d) for d in ts.dependencies],
        dependents=[_brief(d) for d in ts.dependents],
        wanted_by=sorted(ts.who_wants),
        retries_left=ts.retries,
        suspicious=ts.suspicious,
        exception=ts.error[2] if ts.error else None,
        traceback=ts.error[3] if ts.error else None,
        story=[[old, new, step.stimulus_id] for step in state.story(ts.key)
               for old, new in step.transitions][-50:],
    )
    return detail


def graph(state: SchedulerState, limit: int = 500) -> dict[str, Any]:
    """Nodes and edges of the tasks not yet released, at most ``limit`` of them."""
    live = [ts for ts in state.tasks.values() if ts.state != TS.RELEASED]
    shown = live[:limit]
    index: dict[Hashable, int] = {ts.key: i for i, ts in enumerate(shown)}
    nodes = [{"key": str(ts.key), "name": ts.name, "state": ts.state.value} for ts in shown]
    edges = [[index[d.key], index[ts.key]] for ts in shown for d in ts.dependencies
             if d.key in index]
    return {"nodes": nodes, "edges": edges, "total": len(live), "truncated": len(live) > limit}


def _brief(ts: TaskState) -> dict[str, Any]:
    return {
        "key": str(ts.key),
        "name": ts.name,
        "state": ts.state.value,
        "worker": ts.processing_on.address if ts.processing_on else None,
    }


def number(value: Any) -> float:
    """A heartbeat figure as a float; anything else a worker sent counts as 0."""
    return float(value) if isinstance(value, int | float) else 0.0
