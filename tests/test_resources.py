"""``resources=`` on submit with workers started with ``--resources``: real processes."""

from __future__ import annotations

import os
import time

import pytest

from corral import Client, LocalCluster
from tests.test_security import corral_cli, stop, wait_for_workers

pytestmark = pytest.mark.usefixtures("no_leaks")


def hold_a_gpu(i: int) -> tuple[int, float, float]:
    import os
    import time

    start = time.time()
    time.sleep(0.3)
    return os.getpid(), start, time.time()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(stop, -1) for _, stop in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.timeout(90)
def test_tasks_wait_for_a_worker_with_free_resources():
    with LocalCluster(n_workers=1, threads_per_worker=4, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        env = {**os.environ, **cluster.security.environment()}
        gpu_worker = corral_cli("worker", cluster.scheduler_address, "--nthreads", "4",
                                "--resources", "GPU=2", "--name", "gpu", env=env)
        try:
            wait_for_workers(client, 2)
            plain_pid = client.run(os.getpid, workers=[
                a for a, w in client.scheduler_info()["workers"].items() if w["name"] != "gpu"])
            runs = client.gather(client.map(hold_a_gpu, range(6), resources={"GPU": 1}))
            pids = {pid for pid, _, _ in runs}
            assert len(pids) == 1
            assert pids.isdisjoint(plain_pid.values())  # all on the worker that has GPUs
            assert most_at_once([(s, e) for _, s, e in runs]) == 2  # 4 threads, 2 GPUs
            too_big = client.submit(hold_a_gpu, 99, resources={"GPU": 3})
            time.sleep(0.5)
            assert too_big.status == "pending"  # waits for a worker that has 3
            assert client.submit(hold_a_gpu, 7).result(timeout=30)  # others still run
            client.cancel([too_big])
        finally:
            stop(gpu_worker)
