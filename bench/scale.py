"""Scheduler scale: cost per task as graphs grow, and memory per pending task vs dask.

1. Graphs of 10^3 … 10^6 tasks (a third each of trees, chains and shuffles) taken in
   and scheduled to completion on 1 000 workers that finish each task as soon as they
   get it: the CPU time spent inside ``SchedulerState.handle``, per task
   (``per_task_cpu_s``). Nothing else runs, so this is the scheduler's own cost.
2. Peak Python memory (tracemalloc) while the scheduler state machine takes in each
   graph, per task: the moment it holds every task.
3. The same graphs up to 10^5 tasks in a full simulation (``corral.simulation``: worker
   state machines, transfers, virtual clock): scheduler CPU per task and makespan.
4. End to end, side by side: the RSS of a real scheduler process per pending task, for
   ``corral scheduler`` and dask's scheduler (dask in its own venv, ``_dask_env``).

Targets: the 10^6 per-task cost at most 1.5x the 10^3 one; the 10^6 graph in under 60 s
of scheduler CPU; corral's RSS per pending task at most 0.5x dask's. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _dask_env import run_in_dask_env  # noqa: E402

from corral.scheduler import events as ev  # noqa: E402
from corral.scheduler.state import SchedulerState  # noqa: E402
from corral.simulation import Simulation, mixed  # noqa: E402

WORKERS = 1_000


def simulate(n: int, repeats: int) -> tuple[float, float, float]:
    """A full simulation (worker state machines, transfers, clock) of an ``n``-task graph:
    the median run's scheduler CPU seconds per task, makespan and total CPU seconds."""
    runs = []
    for seed in range(repeats):
        graph = mixed(n, random.Random(seed))
        sim = Simulation(WORKERS, seed=seed)
        sim.submit(graph)
        gc.collect()
        summary = sim.run()
        assert summary.done == summary.wanted, summary
        assert not summary.stalled, summary
        runs.append((summary.scheduler_cpu_s / len(graph), summary.makespan, summary.cpu_s))
        del sim, graph
    return sorted(runs)[len(runs) // 2]


def _cluster_and_graph(graph: Any) -> tuple[SchedulerState, ev.UpdateGraph]:
    """A scheduler state machine with 1 000 one-thread workers, and ``graph`` to submit."""
    state = SchedulerState()
    state.handle(*(ev.AddWorker(stimulus_id=f"w{i}", address=f"sim://worker-{i}", nthreads=1)
                   for i in range(WORKERS)))
    return state, ev.UpdateGraph(stimulus_id="graph", client="c", tasks=tuple(graph.tasks),
                                 wanted=tuple(graph.wanted))


def drive(n: int, seed: int = 0) -> float:
    """Scheduler CPU seconds for an ``n``-task graph on 1 000 workers that finish every task
    they are given at once: intake and all scheduling, and nothing else (no worker state
    machines, transfers or clock, which the simulation spends most of its time on)."""
    graph = mixed(n, random.Random(seed))
    state, update = _cluster_and_graph(graph)
    gc.collect()
    start = time.process_time()
    actions = state.handle(update)
    elapsed = time.process_time() - start
    done = 0
    while actions:
        replies: list[ev.Stimulus] = []
        for a in actions:
            if isinstance(a, ev.ComputeTask):
                sid = f"done-{a.key}"
                replies.append(ev.TaskStarted(stimulus_id=sid, worker=a.worker, key=a.key))
                replies.append(ev.TaskFinished(stimulus_id=sid, worker=a.worker, key=a.key,
                                               nbytes=graph.nbytes[a.key], start=0.0, stop=0.01))
            elif isinstance(a, ev.ReportKeyInMemory):
                done += 1
        start = time.process_time()
        actions = state.handle(*replies)
        elapsed += time.process_time() - start
    assert done == len(graph.wanted), (done, len(graph.wanted))
    return elapsed


def peak_bytes_per_task(n: int) -> float:
    """Peak traced memory of the scheduler taking in an ``n``-task graph, per task."""
    graph = mixed(n, random.Random(0))
    state, update = _cluster_and_graph(graph)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    actions = state.handle(update)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del actions, state
    return (peak - base) / len(graph)


def rss_per_pending(system: str, pending: int, repeats: int) -> dict | None:
    script, args = str(HERE / "_pending_workload.py"), (system, str(pending), str(repeats))
    if system == "dask":
        return run_in_dask_env(script, *args, timeout=1800)
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                         timeout=1800)
    if out.returncode != 0:
        print(f"corral run failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one repetition each, full simulations up to 10^4 tasks, "
                             "20 000 pending tasks end to end")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="graph sizes, comma-separated (must include 1000)")
    parser.add_argument("--no-sim", action="store_true", help="skip the full simulations")
    parser.add_argument("--no-dask", action="store_true", help="skip the end-to-end runs")
    opts = parser.parse_args()
    sizes = [int(n) for n in opts.sizes.split(",")]
    pending = 20_000 if opts.quick else 100_000
    print(f"# corral scheduler scale — {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {WORKERS:,} simulated workers")
    cpu: dict[str, float] = {}
    peak: dict[str, float] = {}
    totals: dict[str, float] = {}
    print(f"{'tasks':>10} {'sched CPU us/task':>18} {'sched CPU s':>12} {'peak B/task':>12}")
    for n in sizes:
        runs = [drive(n, seed) for seed in range(1 if opts.quick or n >= 100_000 else 3)]
        totals[str(n)] = sorted(runs)[len(runs) // 2]
        cpu[str(n)] = totals[str(n)] / n
        peak[str(n)] = peak_bytes_per_task(n)
        print(f"{n:>10,} {cpu[str(n)] * 1e6:>18,.1f} {totals[str(n)]:>12,.2f} "
              f"{peak[str(n)]:>12,.0f}", flush=True)
    largest = str(max(sizes))
    ratio = cpu[largest] / cpu["1000"]
    figures: dict[str, Any] = {
        "per_task_cpu_s": cpu, "peak_bytes_per_task": peak,
        "ratio_1e6_to_1e3": ratio if largest == "1000000" else None,
        "ratio_largest_to_1e3": ratio, "scheduler_cpu_s": totals,
    }
    print(f"per-task CPU ratio {largest} / 1000 tasks: {ratio:.2f} (target <= 1.5); "
          f"{largest} tasks: {totals[largest]:.1f} s of scheduler CPU (target < 60 s at 10^6)")
    if not opts.no_sim:
        simulated: dict[str, Any] = {}
        print(f"{'tasks':>10} {'simulated: sched us/task':>25} {'makespan s':>11} "
              f"{'sim CPU s':>10}")
        for n in [n for n in sizes if n <= (10_000 if opts.quick else 100_000)]:
            per_task, makespan, cpu_s = simulate(n, 1 if opts.quick or n >= 100_000 else 3)
            simulated[str(n)] = {"scheduler_cpu_s_per_task": per_task, "makespan_s": makespan,
                                 "simulation_cpu_s": cpu_s}
            print(f"{n:>10,} {per_task * 1e6:>25,.1f} {makespan:>11,.2f} {cpu_s:>10,.1f}",
                  flush=True)
        figures["simulated"] = simulated
    if not opts.no_dask:
        repeats = 1 if opts.quick else 3
        corral = rss_per_pending("corral", pending, repeats)
        dask = rss_per_pending("dask", pending, repeats)
        c = corral and corral["bytes_per_pending_task"]
        d = dask and dask["bytes_per_pending_task"]
        figures["rss_per_pending_task"] = {"pending": pending, "corral": c, "dask": d,
                                           "ratio": c / d if c and d else None,
                                           "corral_runs": corral and corral["runs"],
                                           "dask_runs": dask and dask["runs"]}
        print(f"scheduler RSS per pending task ({pending:,} pending): corral "
              f"{c or float('nan'):,.0f} B, dask {d or float('nan'):,.0f} B, ratio "
              f"{(c / d) if c and d else float('nan'):.2f} (target <= 0.5)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
