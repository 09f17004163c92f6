"""Sequential ``submit(inc, i).result()`` latency and 10 000 no-op tasks/s, written once
against the API corral and dask.distributed share (Ray through a small adapter).

Run inside the system's environment: ``python _latency_workload.py corral|dask|ray``;
prints one JSON object with the figures (medians of ``REPEATS`` runs).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

REPEATS = 5
SAMPLES = 200


def inc(x):
    return x + 1


def noop(x):
    return x


def measure(client) -> dict:
    for i in range(50):
        client.submit(inc, i, pure=False).result()
    p50s, p99s, rates = [], [], []
    for _ in range(REPEATS):
        samples = []
        for i in range(SAMPLES):
            start = time.perf_counter()
            client.submit(inc, i, pure=False).result()
            samples.append(time.perf_counter() - start)
        samples.sort()
        p50s.append(samples[len(samples) // 2] * 1e3)
        p99s.append(samples[int(len(samples) * 0.99)] * 1e3)
    for _ in range(REPEATS):
        start = time.perf_counter()
        client.gather(client.map(noop, range(10_000), pure=False))
        rates.append(10_000 / (time.perf_counter() - start))
        time.sleep(0.3)  # let releases settle
    return {"p50_ms": statistics.median(p50s), "p99_ms": statistics.median(p99s),
            "tasks_per_s_10000": statistics.median(rates)}


class RayClient:
    """The few client calls ``measure`` makes, on Ray: tasks are remote functions on a
    local Ray of 2 CPUs (like the others' 2 one-thread workers), results come by ``ray.get``."""

    def __init__(self) -> None:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.ray, self.remote = ray, {}

    def _remote(self, fn):
        if fn not in self.remote:
            self.remote[fn] = self.ray.remote(num_cpus=1)(fn)
        return self.remote[fn]

    def submit(self, fn, x, pure=False):
        return RayFuture(self.ray, self._remote(fn).remote(x))

    def map(self, fn, xs, pure=False):
        remote = self._remote(fn)
        return [remote.remote(x) for x in xs]

    def gather(self, refs):
        return self.ray.get(refs)


class RayFuture:
    def __init__(self, ray, ref) -> None:
        self.ray, self.ref = ray, ref

    def result(self):
        return self.ray.get(self.ref)


def main() -> None:
    if sys.argv[1] == "ray":
        ray_client = RayClient()
        figures = measure(ray_client)
        ray_client.ray.shutdown()  # its raylet, GCS and agents would outlive this process
        print(json.dumps(figures))
        os._exit(0)
    if sys.argv[1] == "corral":
        from corral import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    else:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster.scheduler_address)
    figures = measure(client)
    print(json.dumps(figures))
    os._exit(0)  # skip slow teardown of the clusters' threads


if __name__ == "__main__":
    main()
