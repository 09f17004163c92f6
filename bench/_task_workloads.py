"""The task workloads, written once against the API corral and dask.distributed share.

Run as a script inside either environment: ``python _task_workloads.py corral|dask
[--quick]``; prints one JSON object with the figures.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time

import psutil

SIZES = (1_000, 10_000, 100_000)
REPEATS = 3


def noop(x):
    return x


def make_array(nbytes):
    import numpy as np

    return np.ones(nbytes, dtype="u1")


def size_of(a):
    return a.nbytes


def blocker(seconds):
    time.sleep(seconds)
    return 0


def plus(x, y):
    return x


def measure(client, quick: bool) -> dict:
    out: dict = {}
    workers = sorted(client.nthreads())
    sizes = SIZES[:2] if quick else SIZES
    for n in sizes:
        rates = []
        for _ in range(1 if n == 100_000 else REPEATS):
            start = time.perf_counter()
            futures = client.map(noop, range(n), pure=False)
            client.gather(futures)
            rates.append(n / (time.perf_counter() - start))
            del futures
            gc.collect()
            time.sleep(0.5)  # let releases settle between runs
        out[f"tasks_per_s_{n}"] = statistics.median(rates)
    for i in range(20):
        client.submit(noop, i, pure=False).result()
    samples = []
    for i in range(300):
        start = time.perf_counter()
        client.submit(noop, i, pure=False).result()
        samples.append(time.perf_counter() - start)
    out["latency_ms"] = statistics.median(samples) * 1e3
    nbytes = 200 * 2**20
    transfers = []
    for _ in range(REPEATS):
        a = client.submit(make_array, nbytes, workers=[workers[0]], pure=False)
        client.gather(a)
        start = time.perf_counter()
        b = client.submit(size_of, a, workers=[workers[1]], pure=False)
        assert b.result() == nbytes
        transfers.append(nbytes / (time.perf_counter() - start))
        del a, b
    out["transfer_bytes_per_s"] = statistics.median(transfers)
    pending = 20_000 if quick else 100_000
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    block = client.submit(blocker, 30, workers=[workers[0]], pure=False)
    waiting = client.map(plus, range(pending), [block] * pending, pure=False)
    time.sleep(3)  # the graph reaches the scheduler and settles
    rss_after = psutil.Process().memory_info().rss
    out["bytes_per_pending_task"] = (rss_after - rss_before) / pending
    client.cancel([block, *waiting])
    return out


def main() -> None:
    system, quick = sys.argv[1], "--quick" in sys.argv
    if system == "corral":
        from corral import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1)
    else:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster.scheduler_address)
    try:
        figures = measure(client, quick)
    finally:
        client.close()
        cluster.close()
    print(json.dumps(figures))
    os._exit(0)  # skip slow interpreter teardown of the clusters' threads


if __name__ == "__main__":
    main()
