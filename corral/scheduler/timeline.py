"""What happened and when: finished tasks and transfers, for the dashboard and /metrics.

Recording costs an append and a few counter bumps per task. Pages and metrics read
these records at their own modest rate, so watching the cluster never adds work per
task beyond this. Pure bookkeeping: no I/O, no clock (times come from the workers).
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Hashable
from typing import NamedTuple

# Upper bounds (seconds) of the task-duration histogram, as Prometheus expects them.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, float("inf"),
)  # fmt: skip


class Record(NamedTuple):
    """One bar of the task stream: a task that ran, or a transfer a worker made."""

    kind: str  # "task", "erred" or "transfer"
    key: str  # the task's key, or "peer → worker" for a transfer
    name: str  # function name; "transfer" for transfers
    worker: str
    start: float
    stop: float
    nbytes: int


class Timeline:
    def __init__(self, maxlen: int = 20_000) -> None:
        self.records: deque[Record] = deque(maxlen=maxlen)
        self.seq = 0  # records appended so far; clients ask for what came after theirs
        self.finished: Counter[str] = Counter()  # by function name
        self.erred: Counter[str] = Counter()
        self.bucket_counts = [0] * len(DURATION_BUCKETS)
        self.duration_sum = 0.0
        self.transferred_bytes = 0
        self.transfers = 0

    def _append(self, record: Record) -> None:
        self.records.append(record)
        self.seq += 1

    def task_finished(
        self, key: Hashable, name: str, worker: str, start: float, stop: float, nbytes: int
    ) -> None:
        self.finished[name] += 1
        duration = max(stop - start, 0.0)
        self.bucket_counts[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration
        self._append(Record("task", str(key), name, worker, start, stop, nbytes))

    def task_erred(self, key: Hashable, name: str, worker: str, start: float, stop: float) -> None:
        self.erred[name] += 1
        self._append(Record("erred", str(key), name, worker, start, stop, 0))

    def transfer(self, worker: str, peer: str, start: float, stop: float, nbytes: int) -> None:
        self.transferred_bytes += nbytes
        self.transfers += 1
        self._append(Record("transfer", f"{peer} → {worker}", "transfer", worker, start, stop,
                            nbytes))

    def since(self, seq: int) -> tuple[int, list[Record]]:
        """Records after ``seq`` still held (older ones have been dropped), and the new seq."""
        new = min(self.seq - seq, len(self.records))
        if new <= 0:
            return self.seq, []
        return self.seq, list(self.records)[-new:]

    def histogram(self) -> list[tuple[float, int]]:
        """Cumulative counts per upper bound, the way Prometheus histograms count."""
        total, out = 0, []
        for bound, count in zip(DURATION_BUCKETS, self.bucket_counts, strict=True):
            total += count
            out.append((bound, total))
        return out
