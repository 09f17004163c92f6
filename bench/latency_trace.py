"""Where one small task's time goes: timestamps at each hop of ``submit(inc, i).result()``.

Wraps (monkeypatches, in this process and in each worker through ``client.run``) the
points a task passes: the client's submit and its wait, every ``BatchedSend.send``, every
socket write and decoded read, the servers' ``handle``, the task thread's wake-up and
call, and the hop back to the worker's loop. Each records ``time.monotonic_ns()``
(CLOCK_MONOTONIC: one clock for all processes of a host). Prints, per step (with the
thread it ran on), the median time since the previous step over N sequential tasks;
a step seen in fewer than N tasks (a release, a heartbeat) overlaps the next task.

    python bench/latency_trace.py [N]
    PYTHONPATH=/path/to/other/corral python bench/latency_trace.py   # another version

A profiling aid, not part of ``make bench``: the wrappers cost ~1 µs each.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import defaultdict
from typing import Any

EVENTS: list[tuple[int, str, str]] = []  # (monotonic ns, where, what)


def _where() -> str:
    return threading.current_thread().name


def _wrap(owner: Any, attr: str, label: str, done: str = "") -> None:
    """Note ``label`` when ``owner.attr`` is called, and ``done`` (if given) when it returns."""
    import asyncio

    original = getattr(owner, attr, None)
    if original is None:  # an older corral (the trace also runs against a baseline)
        return
    if asyncio.iscoroutinefunction(original):
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            if label:
                EVENTS.append((time.monotonic_ns(), _where(), label))
            result = await original(*args, **kwargs)
            if done:
                EVENTS.append((time.monotonic_ns(), _where(), done))
            return result
        traced: Any = traced_async
    else:
        def traced_sync(*args: Any, **kwargs: Any) -> Any:
            if label:
                EVENTS.append((time.monotonic_ns(), _where(), label))
            result = original(*args, **kwargs)
            if done:
                EVENTS.append((time.monotonic_ns(), _where(), done))
            return result
        traced = traced_sync
    setattr(owner, attr, traced)


def install(role: str) -> None:
    """Wrap the hops this process's part of the path passes."""
    from corral.comm import tcp
    from corral.core import batched

    _wrap(batched.BatchedSend, "send", f"{role}: stream.send")
    _wrap(tcp.TCPComm, "write_frames", f"{role}: socket write (awaited)")
    _wrap(tcp.TCPComm, "write_frames_nowait", f"{role}: socket write")
    _wrap(tcp.TCPComm, "read", "", f"{role}: message decoded")
    if role == "worker":
        from corral.worker import runner, server

        _wrap(server.Worker, "_stimulus", "worker: message to stimulus")
        _wrap(server.Worker, "handle", "worker: handle", "worker: handled")
        _wrap(runner.TaskRunner, "submit", "worker: to task thread")
        _wrap(runner.TaskRunner, "_deliver", "worker: back on loop")
    else:
        from corral.client import client, future, reports, sync
        from corral.scheduler import server as sserver

        _wrap(sync.Client, "submit", "client: submit", "client: submit returned")
        _wrap(client.AsyncClient, "_send", "client: _send on loop")
        _wrap(sserver.Scheduler, "_from_client", "scheduler: from client")
        _wrap(sserver.Scheduler, "_from_worker", "scheduler: from worker")
        _wrap(sserver.Scheduler, "handle", "scheduler: handle", "scheduler: handled")
        _wrap(reports, "on_report", "client: on_report")
        _wrap(future.FutureState, "wait_sync", "client: result() waits", "client: caller woke")


class _TracedQueue:
    """The task threads' queue, noting when a thread takes a task and when it ran."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def get(self) -> Any:
        item = self._queue.get()
        EVENTS.append((time.monotonic_ns(), _where(), "worker: task thread awake"))
        if item is None:
            return None
        key, fn = item

        def call() -> Any:
            value = fn()
            EVENTS.append((time.monotonic_ns(), _where(), "worker: task ran"))
            return value
        return key, call


def _install_on_worker() -> None:
    install("worker")
    from corral.worker import context

    runner = context.get_worker()._runner
    runner._queue = _TracedQueue(runner._queue)  # _work looks it up on each task


def _take_events() -> list[tuple[int, str, str]]:
    events = list(EVENTS)
    EVENTS.clear()
    return events


def inc(x: int) -> int:
    return x + 1


def _add_path(path: str) -> None:
    if path not in sys.path:
        sys.path.insert(0, path)


def main() -> None:
    from pathlib import Path

    from corral import Client, LocalCluster

    here = str(Path(__file__).parent)
    _add_path(here)
    import latency_trace as hooks  # by reference, so the workers import it too

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster.scheduler_address)
    client.run(_add_path, here)
    client.run(hooks._install_on_worker)
    hooks.install("client/scheduler")
    events_here = hooks.EVENTS
    for i in range(50):
        client.submit(inc, i, pure=False).result()
    client.run(hooks._take_events)
    events_here.clear()
    starts: list[int] = []
    ends: list[int] = []
    for i in range(n):
        starts.append(time.monotonic_ns())
        client.submit(inc, i, pure=False).result()
        ends.append(time.monotonic_ns())
    local = list(events_here)
    remote = [e for events in client.run(hooks._take_events).values() for e in events]
    events = sorted(local + remote)
    steps: dict[str, list[float]] = defaultdict(list)
    order: dict[str, int] = {}
    totals = []
    for start, end in zip(starts, ends, strict=True):
        window = [e for e in events if start <= e[0] <= end]
        totals.append((end - start) / 1e3)
        previous = start
        seen: dict[str, int] = defaultdict(int)
        for t, where, what in window:
            what = f"{what} [{where}]"
            seen[what] += 1
            label = f"{what} #{seen[what]}" if seen[what] > 1 else what
            steps[label].append((t - previous) / 1e3)
            order.setdefault(label, len(order))
            previous = t
        steps["(to result() returned)"].append((end - previous) / 1e3)
        order.setdefault("(to result() returned)", 10_000)
    print(f"{n} sequential tasks, 1 worker x 1 thread, median total "
          f"{statistics.median(totals):.0f} us (tracing adds ~1 us per step)")
    print(f"{'step (time since the previous step)':48} {'median us':>10} {'seen':>6}")
    for label in sorted(steps, key=order.__getitem__):
        values = steps[label]
        print(f"{label:48} {statistics.median(values):10.1f} {len(values):6}")
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
