"""``/metrics``: the scheduler's state in Prometheus text format.

A custom collector reads the state when Prometheus scrapes, so nothing is updated
per task: counters and the duration histogram come from the scheduler's timeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from corral.dashboard.snapshot import counts_by_state, number

if TYPE_CHECKING:
    from corral.scheduler.view import SchedulerView


class SchedulerCollector:
    def __init__(self, scheduler: SchedulerView) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        state, timeline = self.scheduler.state, self.scheduler.timeline
        tasks = GaugeMetricFamily("corral_tasks", "Tasks the scheduler knows, by state",
                                  labels=["state"])
        for name, count in counts_by_state(state).items():
            tasks.add_metric([name], count)
        yield tasks
        yield GaugeMetricFamily("corral_workers", "Workers connected", value=len(state.workers))
        yield GaugeMetricFamily("corral_threads", "Threads over all workers",
                                value=sum(w.nthreads for w in state.workers.values()))

        memory = GaugeMetricFamily("corral_worker_memory_bytes",
                                   "Resident memory of each worker process", labels=["worker"])
        held = GaugeMetricFamily("corral_worker_stored_bytes",
                                 "Bytes of results held by each worker", labels=["worker"])
        latency = GaugeMetricFamily(
            "corral_comm_latency_seconds",
            "Round trip of the last heartbeat between each worker and the scheduler",
            labels=["worker"],
        )
        split = {kind: GaugeMetricFamily(f"corral_worker_{kind}_bytes", text, labels=["worker"])
                 for kind, text in (
                     ("managed", "Bytes of each worker's data held in memory"),
                     ("unmanaged", "Resident memory of each worker beyond its data"),
                     ("spilled", "Bytes (as in memory) of each worker's data spilled to disk"))}
        paused = GaugeMetricFamily("corral_worker_paused",
                                   "1 while a worker is paused (memory over its pause threshold)",
                                   labels=["worker"])
        for address, ws in state.workers.items():
            info = self.scheduler.worker_info.get(address, {})
            metrics = info.get("metrics") or {}
            for kind, family in split.items():
                family.add_metric([address], number((info.get("memory") or {}).get(kind)))
            paused.add_metric([address], int(ws.paused))
            memory.add_metric([address], number(metrics.get("memory")))
            held.add_metric([address], ws.nbytes)
            latency.add_metric([address], number(metrics.get("latency")))
        yield memory
        yield from split.values()
        yield paused
        yield held
        yield latency

        yield CounterMetricFamily("corral_transferred_bytes",
                                  "Bytes workers fetched from each other",
                                  value=timeline.transferred_bytes)
        yield CounterMetricFamily("corral_transfers", "Transfers between workers",
                                  value=timeline.transfers)
        finished = CounterMetricFamily("corral_tasks_finished", "Tasks computed, by function",
                                       labels=["name"])
        for name, count in timeline.finished.items():
            finished.add_metric([name], count)
        yield finished
        erred = CounterMetricFamily("corral_tasks_erred", "Task runs that raised, by function",
                                    labels=["name"])
        for name, count in timeline.erred.items():
            erred.add_metric([name], count)
        yield erred
        yield HistogramMetricFamily(
            "corral_task_duration_seconds", "How long tasks ran on their workers",
            buckets=[(_bound(b), c) for b, c in timeline.histogram()],
            sum_value=timeline.duration_sum,
        )


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def registry_for(scheduler: SchedulerView) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SchedulerCollector(scheduler))
    return registry
