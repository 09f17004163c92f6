"""CPU per task of sequential ``submit(inc, i).result()``, in each process it crosses.

Runs N sequential tasks on a ``LocalCluster`` (1 worker x 1 thread, no dashboard) and
prints, per task, the user and system CPU of the client's process (the caller's thread,
the shared loop thread, and the in-process scheduler: ``resource.getrusage``) and of the
worker's process (``psutil`` on its pid), with the wall-time p50. On a shared machine CPU
per task is far steadier than wall time, so it is the figure to judge a change by:

    python bench/latency_cpu.py [N] [--runs R] [--json]
    PYTHONPATH=/path/to/other/corral python bench/latency_cpu.py   # another version

Not part of ``make bench``: a profiling aid.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time


def inc(x: int) -> int:
    return x + 1


def _self_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure(client, pid: int, n: int) -> dict[str, float]:
    import psutil

    worker = psutil.Process(pid)
    for i in range(100):  # warm up: imports, caches, the function's pickle
        client.submit(inc, i, pure=False).result()
    samples = []
    u0, s0 = _self_cpu()
    w0 = worker.cpu_times()
    wall0 = time.perf_counter()
    for i in range(n):
        start = time.perf_counter()
        client.submit(inc, i, pure=False).result()
        samples.append(time.perf_counter() - start)
    wall = time.perf_counter() - wall0
    u1, s1 = _self_cpu()
    w1 = worker.cpu_times()
    per = 1e3 / n  # seconds in all -> ms per task
    return {
        "client_user_ms": (u1 - u0) * per, "client_sys_ms": (s1 - s0) * per,
        "worker_user_ms": (w1.user - w0.user) * per,
        "worker_sys_ms": (w1.system - w0.system) * per,
        "wall_p50_ms": statistics.median(samples) * 1e3, "wall_mean_ms": wall * per,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import corral
    from corral import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as client:
        (pid,) = client.run(os.getpid).values()
        for _ in range(args.runs):
            figures = measure(client, pid, args.n)
            if args.json:
                print(json.dumps(figures), flush=True)
                continue
            client_cpu = figures["client_user_ms"] + figures["client_sys_ms"]
            worker_cpu = figures["worker_user_ms"] + figures["worker_sys_ms"]
            print(f"{os.path.dirname(corral.__file__)}: {args.n} tasks, load "
                  f"{figures['load']:.1f}: client CPU {client_cpu:.3f} ms/task (user "
                  f"{figures['client_user_ms']:.3f}), worker CPU {worker_cpu:.3f} ms/task "
                  f"(user {figures['worker_user_ms']:.3f}), wall p50 "
                  f"{figures['wall_p50_ms']:.3f} ms, mean {figures['wall_mean_ms']:.3f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
