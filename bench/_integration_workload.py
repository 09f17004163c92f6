"""dask collections through ``client.get``, ``dask.persist`` and computations on the
persisted array, and calls through an executor, in one cluster.

Run inside either environment: ``python _integration_workload.py corral|dask|local``.
``corral`` and ``dask`` start a LocalCluster of 2 worker processes x 1 thread and use
its ``client.get`` and executor (``corral.Executor`` / dask's ``client.get_executor()``);
``local`` measures the same work without a cluster: dask's threaded scheduler and a
``ProcessPoolExecutor(2)``. Medians of ROUNDS rounds; prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import dask
import dask.array as da
import dask.bag as db

ROUNDS = 5
CALLS = 5_000
FIB_N = 12  # fib(12) launched as distinct tasks (pure=False): 465 tasks, 232 of them wait


def noop(x):
    return x


def fib(n: int, system: str) -> int:
    """Tasks that launch tasks: each call submits its two halves and secedes to wait."""
    if n < 2:
        return n
    if system == "corral":
        from corral import get_client, rejoin, secede
    else:
        from distributed import get_client, rejoin, secede
    client = get_client()
    a = client.submit(fib, n - 1, system, pure=False)
    b = client.submit(fib, n - 2, system, pure=False)
    secede()
    total = sum(client.gather([a, b]))
    rejoin()
    return total


def launcher(client, system: str) -> dict:
    """fib(FIB_N) on 2 one-thread workers: without secede it would deadlock."""
    assert client.submit(fib, FIB_N, system, pure=False).result() == 144
    return {"fib_tasks": 465, "fib_s": median_seconds(
        lambda: client.submit(fib, FIB_N, system, pure=False).result())}


def collections() -> dict:
    """name -> (collection, expected value); built afresh so nothing is cached."""
    x = da.ones((4_000, 4_000), chunks=(250, 250))  # 256 chunks
    bag = db.from_sequence(range(200_000), npartitions=200)
    return {
        "array": ((x + x.T).mean(axis=0).sum(), 4_000.0 * 2),
        "bag": (bag.map(lambda v: v * 2).filter(lambda v: v % 3 == 0).sum(),
                sum(v * 2 for v in range(200_000) if v * 2 % 3 == 0)),
    }


def median_seconds(action) -> float:
    action()  # warm up: imports, pickling caches, worker connections
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure_persist(get, futures_of, wait) -> dict:
    """``dask.persist`` of a 128 MB array (through the client's ``persist`` on a cluster),
    then repeated computations on the persisted array."""
    def persist():
        # A fresh array (new keys) each time: persisting the same keys again can find
        # them still in memory, while the last round's release is on its way, and time
        # nothing (dask.distributed did: 0.05 s for 128 MB).
        x = da.random.random((4_000, 4_000), chunks=(500, 500))  # 64 chunks of 2 MB
        (y,) = dask.persist(x, scheduler=get)
        if futures_of is not None:
            wait(futures_of(y))  # the data stays on the cluster; wait until it is there
        return y

    out = {"persist_s": median_seconds(persist)}
    y = persist()
    expected = float(dask.compute((y + y.T).mean(axis=0).sum(), scheduler=get)[0])
    assert 3_900 < expected < 4_100, expected
    out["on_persisted_s"] = median_seconds(
        lambda: dask.compute((y + y.T).mean(axis=0).sum(), scheduler=get))
    return out


def measure(get, executor, futures_of=None, wait=None) -> dict:
    out = measure_persist(get, futures_of, wait)
    for name, (collection, expected) in collections().items():
        value = dask.compute(collection, scheduler=get)[0]
        assert abs(value - expected) < 1e-6 * abs(expected), (name, value, expected)
        out[f"{name}_tasks"] = len(collection.__dask_graph__())
        out[f"{name}_s"] = median_seconds(lambda c=collection: dask.compute(c, scheduler=get))
    for chunksize in (1, 100):
        seconds = median_seconds(
            lambda c=chunksize: list(executor.map(noop, range(CALLS), chunksize=c)))
        out[f"map_calls_per_s_chunksize_{chunksize}"] = CALLS / seconds
    return out


def main() -> None:
    system = sys.argv[1]
    if system == "corral":
        from corral import Client, Executor, LocalCluster, futures_of, wait

        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
            with Client(cluster) as client, Executor(client) as executor:
                out = measure(client.get, executor, futures_of, wait)
                out.update(launcher(client, system))
    elif system == "dask":
        from distributed import Client, LocalCluster, futures_of, wait

        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                          processes=True) as cluster, Client(cluster) as client:
            executor = client.get_executor(pure=False)
            out = measure(client.get, executor, futures_of, wait)
            out.update(launcher(client, system))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(2) as executor:
            out = measure("threads", executor)
    out["dask_version"] = dask.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
