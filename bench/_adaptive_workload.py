"""Runs of bench/adaptive.py for one system (corral, or dask.distributed in its own venv).

Each repetition: a fixed cluster of ``maximum`` workers runs the burst (``n`` tasks
sleeping ``duration`` s each), then a cluster of one worker adapting between 1 and
``maximum`` with the default knobs (interval 1 s, wait count 3, target duration 5 s)
runs it. A thread samples the scheduler's worker count every 5 ms. Prints one JSON
line: every repetition's figures.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any


def task(i: int) -> int:
    time.sleep(DURATION)
    return i


DURATION = 0.05


def cluster_for(system: str, workers: int, threads: int) -> tuple[Any, Any, Any]:
    """(cluster, client, count of the workers its scheduler has)."""
    if system == "corral":
        from corral import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads,
                               dashboard_address=None)
        return cluster, Client(cluster), lambda: len(cluster.scheduler.state.workers)
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads,
                           dashboard_address=None)
    return cluster, Client(cluster), lambda: len(cluster.scheduler.workers)


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def one_run(system: str, adaptive: bool, n: int, maximum: int, threads: int) -> dict[str, Any]:
    cluster, client, count = cluster_for(system, 1 if adaptive else maximum, threads)
    try:
        if adaptive:
            cluster.adapt(minimum=1, maximum=maximum)
        client.submit(abs, -1).result()  # connections up, the worker ready
        wait_for(lambda: count() == (1 if adaptive else maximum), 60)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter(), count()))
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        start = time.perf_counter()
        watcher.start()
        futures = client.map(task, range(n), pure=False)
        assert client.gather(futures) == list(range(n))
        done = time.perf_counter()
        del futures
        back = wait_for(lambda: count() == 1, 60) if adaptive else True
        minimum_at = time.perf_counter()
        stop.set()
        watcher.join()
        up = next((t for t, c in samples if c > 1), None) if adaptive else None
        return {
            "wall_s": done - start,
            "first_scale_up_s": None if up is None else up - start,
            "peak_workers": max(c for _, c in samples),
            "back_to_minimum_s": (minimum_at - done) if adaptive and back else None,
        }
    finally:
        client.close()
        cluster.close()


def main() -> None:
    global DURATION
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=["corral", "dask"])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=0.05)
    parser.add_argument("--maximum", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    DURATION = opts.duration
    runs: dict[str, list[dict[str, Any]]] = {"fixed": [], "adaptive": []}
    for _ in range(opts.repeat):
        for mode in ("fixed", "adaptive"):
            runs[mode].append(one_run(opts.system, mode == "adaptive", opts.tasks,
                                      opts.maximum, opts.threads))
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
