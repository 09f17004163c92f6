"""Work larger than memory, written once against the API corral and dask.distributed share.

Two workers of one thread, each limited to 500 MiB, run:

1. ``hold``: 20 results of 50 MiB held at once, then each summed;
2. ``persist``: 1.8 GB of random numbers persisted (``dask.array``), then their mean;
3. ``transpose``: ``(x + x.T).sum()`` over a 3.2 GB array;
4. ``shuffle``: a dask.dataframe pipeline over ``dask.datasets.timeseries`` (about
   1.1 GB in memory, over twice the cluster's): a shuffle on a column then a
   ``groupby(...).agg(...)``, and a merge with a second frame (0.4 GB) on a column that
   is not the index, then another aggregation. Each system uses its peer-to-peer
   shuffle (corral's default, dask.distributed's ``p2p``).

For each: completed, wall time, peak RSS of each worker process (sampled every 20 ms),
bytes spilled to disk, worker restarts. ``--scale`` shrinks every size (0.25: a quarter).

Run as a script inside either environment: ``python _memory_workload.py corral|dask
[--scale S] [--timeout T]``; prints one JSON object last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

MiB = 2**20
LIMIT = 500 * MiB


def make(i: int, nbytes: int) -> np.ndarray:
    return np.random.default_rng(i).random(nbytes // 8)


def total(x: np.ndarray) -> float:
    return float(x.sum())


class Workers:
    """Samples this process's worker processes: peak RSS per pid, and pids seen."""

    def __init__(self, system: str) -> None:
        self.mark = "--no-nanny" if system == "corral" else "spawn_main"
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _workers(self) -> list[psutil.Process]:
        found = []
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                line = " ".join(p.cmdline())
                if self.mark in line and "resource_tracker" not in line:
                    found.append(p)
        return found

    def _run(self) -> None:
        procs: list[psutil.Process] = []
        last = 0.0
        while not self._stop.wait(0.02):
            if time.monotonic() - last > 0.5:  # look for new (restarted) workers
                procs, last = self._workers(), time.monotonic()
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    self.peak[p.pid] = max(self.peak.get(p.pid, 0), p.memory_info().rss)

    def __enter__(self) -> Workers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def spilled_corral(client: Any) -> int:
    return sum(w["metrics"].get("spilled_total", 0)
               for w in client.scheduler_info()["workers"].values())


def spilled_dask(client: Any) -> int:
    def spilled(dask_worker: Any) -> int:
        data = dask_worker.data
        metrics = getattr(data, "cumulative_metrics", None)  # distributed >= 2023.x
        if metrics:
            return int(sum(v for k, v in metrics.items() if "disk-write" in str(k)
                           and "bytes" in str(k)))
        return int(getattr(getattr(data, "spilled_total", None), "disk", 0) or 0)

    return sum(client.run(spilled).values())


def hold(client: Any, scale: float) -> float:
    n, size = 20, int(50 * MiB * scale)
    futures = client.map(make, range(n), nbytes=size, pure=False)
    client.gather(client.map(len, futures))  # all held at once
    return sum(client.gather(client.map(total, futures)))


def persist(client: Any, scale: float) -> float:
    import dask.array as da

    n = int(1.8e9 * scale) // 8
    x = da.random.RandomState(0).random_sample(n, chunks=n // 36)
    x = client.persist(x)
    return float(x.mean().compute())


def transpose(client: Any, scale: float) -> float:
    import dask.array as da

    side = int((3.2e9 * scale / 8) ** 0.5) // 10 * 10
    x = da.random.RandomState(1).random_sample((side, side), chunks=(side // 10, side // 10))
    return float((x + x.T).sum().compute())


def shuffle(client: Any, scale: float) -> float:
    import dask
    import dask.datasets

    days = max(2, int(300 * scale))  # 86 400 rows (about 3.8 MB) a day
    end = f"{2000 + days // 365}-{days % 365 // 30 + 1:02d}-{days % 365 % 30 + 1:02d}"
    a = dask.datasets.timeseries("2000-01-01", end, freq="1s", partition_freq="1D",
                                 seed=1).reset_index()
    b = dask.datasets.timeseries("2000-01-01", end, freq="1s", partition_freq="1D",
                                 dtypes={"z": float}, seed=2).reset_index()
    per_id = a.shuffle("id").groupby("name").agg({"x": "sum", "y": "max", "id": "count"})
    merged = a.merge(b, on="timestamp", how="inner", broadcast=False)
    per_name = merged.groupby("name").agg({"z": "sum", "x": "mean"})
    g, m = dask.compute(per_id, per_name)
    return float(g["x"].sum() + g["id"].sum() + m["z"].sum() + m["x"].sum())


WORKLOADS: dict[str, Callable[[Any, float], float]] = {
    "hold": hold, "persist": persist, "transpose": transpose, "shuffle": shuffle}


def run(system: str, name: str, scale: float, timeout: float) -> dict[str, Any]:
    if system == "corral":
        from corral import Client, LocalCluster

        spilled = spilled_corral
    else:
        import dask
        from dask.distributed import Client, LocalCluster

        spilled = spilled_dask
        dask.config.set({"dataframe.shuffle.method": "p2p"})  # dask's own peer-to-peer
    workers = Workers(system)
    outcome: dict[str, Any] = {"completed": False}
    with workers, LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=LIMIT,
                               dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as client:
        result: list[Any] = []

        def work() -> None:
            try:
                result.append(WORKLOADS[name](client, scale))
            except Exception as e:
                result.append(e)

        start = time.perf_counter()
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(timeout)
        wall = time.perf_counter() - start
        done = bool(result) and not isinstance(result[0], Exception)
        outcome = {"completed": done, "wall_s": round(wall, 2),
                   "error": None if done else (repr(result[0])[:200] if result else "timeout")}
        with contextlib.suppress(Exception):
            outcome["spilled_bytes"] = spilled(client)
    peaks = sorted(workers.peak.values(), reverse=True)
    outcome["peak_rss_mib"] = [round(p / MiB) for p in peaks[:2]]
    outcome["restarts"] = max(len(workers.peak) - 2, 0)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("system", choices=["corral", "dask"])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--only", choices=list(WORKLOADS), action="append")
    opts = parser.parse_args()
    figures = {name: run(opts.system, name, opts.scale, opts.timeout)
               for name in (opts.only or WORKLOADS)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
