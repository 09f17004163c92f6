"""Dashboard benchmark: task throughput with the dashboard open vs closed, same run.

2 worker processes x 1 thread, 10 000 no-op tasks per measurement, 5 rounds each way,
alternating; "open" is a headless chromium showing the status page. The same for
dask.distributed (its own env). The physical limit: raw asyncio request/reply round
trips/s on loopback, 100 in flight (each task needs at least one scheduler-worker round
trip, and both systems pipeline them). Also the cost of one dashboard snapshot on the
scheduler's loop at growing numbers of tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _dask_env import run_in_dask_env  # noqa: E402
from rpc import run_pair  # noqa: E402


def snapshot_cost_ms(n_tasks: int) -> float:
    """One live update (summary, workers, progress, stream) with n_tasks in the state."""
    from corral.dashboard import snapshot
    from corral.scheduler import events as ev
    from corral.scheduler.state import SchedulerState
    from corral.scheduler.timeline import Timeline

    state, timeline = SchedulerState(), Timeline()
    for i in range(4):
        state.handle(ev.AddWorker(stimulus_id="w", address=f"tcp://w:{i}", nthreads=1))
    specs = tuple(ev.TaskSpec(key=f"t-{i}", run_spec=b"", name=f"f{i % 5}")
                  for i in range(n_tasks))
    state.handle(ev.UpdateGraph(stimulus_id="g", client="c", tasks=specs,
                                wanted=tuple(s.key for s in specs)))
    for i in range(2000):
        timeline.task_finished(f"t-{i}", "f0", "tcp://w:0", i, i + 0.001, 8)
    start = time.perf_counter()
    for _ in range(10):
        snapshot.summary(state, timeline)
        snapshot.workers(state, {}, time.time())
        snapshot.progress(state, timeline)
        snapshot.records(timeline.since(0)[1])
    return (time.perf_counter() - start) / 10 * 1e3


def run_corral(chromium: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "_dashboard_workload.py"), "corral",
                          chromium], capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs a chromium binary to open the dashboards (apt install chromium)")
    print(f"# corral dashboard benchmark — {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; medians of 5 alternating rounds")
    corral = run_corral(chromium)
    dask = run_in_dask_env(str(HERE / "_dashboard_workload.py"), "dask", chromium) or {}
    raw_rate = run_pair("raw")["calls_per_s_100"]
    print(f"{'tasks/s, 10 000 no-ops':28} {'closed':>9} {'open':>9} {'cost':>7} "
          f"{'open/raw':>9}")
    for name, figures in (("corral", corral), ("dask", dask)):
        if not figures:
            print(f"{name:28} n/a")
            continue
        c, o = figures["closed_median"], figures["open_median"]
        print(f"{name:28} {c:9,.0f} {o:9,.0f} {1 - o / c:7.1%} {o / raw_rate:9.3f}")
    if dask:
        print(f"corral/dask with the dashboard open: "
              f"{corral['open_median'] / dask['open_median']:.1f}x")
    print(f"raw asyncio round trips/s on loopback, 100 in flight (physical limit): "
          f"{raw_rate:,.0f}")
    costs = {n: snapshot_cost_ms(n) for n in (1_000, 10_000, 100_000)}
    for n, ms in costs.items():
        print(f"one live update with {n:>7,} tasks in the scheduler: {ms:6.2f} ms "
              f"(every 0.5 s while a page is open: {ms / 500:.1%} of the loop)")
    if opts.json:
        Path(opts.json).write_text(json.dumps(
            {"corral": corral, "dask": dask, "raw_round_trips_per_s": raw_rate,
             "snapshot_ms": costs}, indent=2))


if __name__ == "__main__":
    main()
