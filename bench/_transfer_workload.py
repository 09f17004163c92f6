"""Worker-to-worker transfers, written once for corral and dask.distributed.

Run as a script inside either environment: ``python _transfer_workload.py corral|dask
[shm|shm-send|shm-copy|socket] SIZE_MB... --repeats N``; prints one JSON object: for each size, the
medians in bytes/s of

* ``transfer``: worker B fetching a NumPy array from worker A after ``QUIET`` seconds in
  which neither did anything (as the raw fetch, ``_raw_socket.raw_fetch_bandwidth``, is
  timed), on B's event loop from the request until the array is in B's memory (what a
  dependency fetch costs);
* ``again``: the same fetch once more, right after the first: both ends awake and
  connected, the shape of the raw socket's push (``_raw_socket.raw_bandwidth``);
* ``task``: submitting a task on B that takes the array as its input, until its (tiny)
  result is back at the client (the fetch plus the scheduling around it);
* ``make``: a task on A making the array, until a second task on A has read its size:
  what the producer pays (with shared memory on, it includes copying the result into a
  segment, ``corral.worker.shared_results``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time


def make_array(nbytes):
    import numpy as np

    array = np.empty(nbytes, dtype="u1")
    array[::4096] = 1  # touch every page: the data really is in A's memory
    return array


def size_of(array):
    return array.nbytes


QUIET = 0.2  # seconds of nothing on either worker before a round's first fetch


async def _fetch(pool_call, nbytes):
    start = time.perf_counter()
    data = await pool_call()
    elapsed = time.perf_counter() - start
    (value,) = data.values()
    assert value.nbytes == nbytes
    return elapsed


async def _fetch_twice(pool_call, nbytes):
    return await _fetch(pool_call, nbytes), await _fetch(pool_call, nbytes)


def corral_fetch(peer, key, nbytes):
    """On worker B (a thread of client.run), after quiet: time a fetch from ``peer`` on
    B's loop, and the same fetch again at once."""
    from corral import get_worker

    worker = get_worker()
    call = lambda: worker.pool(peer).get_data(keys=[key])  # noqa: E731
    time.sleep(QUIET)
    return asyncio.run_coroutine_threadsafe(_fetch_twice(call, nbytes), worker.loop).result()


async def dask_fetch(peer, key, nbytes, dask_worker=None):
    """On worker B's loop (dask runs coroutine functions there), after quiet: a fetch,
    then again."""
    from distributed.worker import get_data_from_worker

    await asyncio.sleep(QUIET)
    elapsed = []
    for _ in range(2):
        start = time.perf_counter()
        response = await get_data_from_worker(dask_worker.rpc, [key], peer,
                                              who=dask_worker.address)
        elapsed.append(time.perf_counter() - start)
        assert response["status"] == "OK", response["status"]
        assert response["data"][key].nbytes == nbytes
        del response
    return tuple(elapsed)


def measure(client, fetch, sizes, repeats):
    first, second = sorted(client.scheduler_info()["workers"])
    out = {}
    for size in sizes:
        nbytes = size * 10**6
        transfers, agains, tasks, makes = [], [], [], []
        for i in range(repeats + 1):  # the first round warms connections up
            start = time.perf_counter()
            a = client.submit(make_array, nbytes, workers=[first], pure=False)
            client.submit(size_of, a, workers=[first], pure=False).result()  # a is made
            made = time.perf_counter() - start
            elapsed, again = client.run(fetch, first, a.key, nbytes, workers=[second])[second]
            start = time.perf_counter()
            assert client.submit(size_of, a, workers=[second], pure=False).result() == nbytes
            task = time.perf_counter() - start
            if i:
                transfers.append(nbytes / elapsed)
                agains.append(nbytes / again)
                tasks.append(nbytes / task)
                makes.append(nbytes / made)
            del a
            time.sleep(0.2)  # the array is released on both workers
        out[size] = {"transfer": statistics.median(transfers),
                     "again": statistics.median(agains), "task": statistics.median(tasks),
                     "make": statistics.median(makes)}
    return out


def main() -> None:
    args = sys.argv[1:]
    repeats = 5
    if "--repeats" in args:
        at = args.index("--repeats")
        repeats = int(args[at + 1])
        del args[at : at + 2]
    system = args[0]
    if system == "corral":
        mode, sizes = args[1], [int(s) for s in args[2:] if s.isdigit()]
        import corral
        from corral import Client, LocalCluster

        # shm: results of 8 MiB and up placed in shared memory as they are made;
        # shm-send (the default): placed there when first sent; shm-copy: copied into it
        # on every send; socket: none of it
        placing = {"shm": "8MiB", "shm-send": "on-send"}.get(mode, False)
        corral.config.set({"comm.shared-memory.enabled": mode != "socket",
                           "comm.shared-memory.place-results": placing})
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        fetch = corral_fetch
    else:
        sizes = [int(s) for s in args[1:] if s.isdigit()]
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        fetch = dask_fetch
    client = Client(cluster.scheduler_address)
    try:
        figures = measure(client, fetch, sizes, repeats)
    finally:
        client.close()
        cluster.close()
    print(json.dumps(figures))
    os._exit(0)  # skip slow interpreter teardown of the clusters' threads


if __name__ == "__main__":
    main()
