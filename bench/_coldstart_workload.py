"""One cold start, timed from outside: ``python _coldstart_workload.py corral|dask|pool``
imports the system, starts a 2-worker local cluster (1 thread each, defaults otherwise),
runs one task, checks its result and closes everything before the process exits."""

from __future__ import annotations

import sys


def inc(x):
    return x + 1


def main() -> None:
    system = sys.argv[1]
    if system == "pool":  # the yardstick: the standard library's two worker processes
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(2) as pool:
            assert pool.submit(inc, 1).result() == 2
        return
    if system == "corral":
        from corral import Client, LocalCluster
    else:
        from dask.distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        assert client.submit(inc, 1).result() == 2


if __name__ == "__main__":
    main()
