"""Results placed in shared memory as made, or not: an A/B of ``comm.shared-memory.place-results``
on work whose large results move between two workers of one host.

For each setting, a LocalCluster of 2 worker processes x 1 thread runs

* ``rechunk``: a dask array of 100 MB chunks (``da.random.random``, chunks of columns)
  rechunked into chunks of rows and summed: every new chunk takes a piece of every old
  one, half of them from the other worker;
* ``move``: 8 tasks on worker A each making a 100 MB array, each read by a task on
  worker B (and the same from B to A).

Wall time of each, medians of ``--repeats`` rounds after one to warm up; the settings
take turns cluster by cluster (``--clusters`` each).

    python bench/place_results.py [--repeats 3] [--clusters 2] [--settings false 8MiB]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHUNK = 100 * 10**6


def make(nbytes, fill):
    import numpy as np

    return np.full(nbytes, fill, dtype="u1")


def total(array):
    return int(array[::4096].sum())


def rechunk_round(client) -> float:
    import dask.array as da

    n = 10_000  # 800 MB of float64: 8 chunks of 100 MB, columns, then rows
    x = da.random.random((n, n), chunks=(n, n // 8))
    y = x.rechunk((n // 8, n))
    start = time.perf_counter()
    y.sum().compute(scheduler=client.get)
    return time.perf_counter() - start


def move_round(client, a: str, b: str) -> float:
    start = time.perf_counter()
    for source, target in ((a, b), (b, a)):
        made = [client.submit(make, CHUNK, i, workers=[source], pure=False) for i in range(8)]
        read = [client.submit(total, m, workers=[target], pure=False) for m in made]
        client.gather(read)
        del made, read
    return time.perf_counter() - start


def run_one(setting: str, repeats: int) -> dict[str, list[float]]:
    import corral
    from corral import Client, LocalCluster

    placed: object = False if setting.lower() in ("false", "off") else setting
    corral.config.set({"comm.shared-memory.place-results": placed})
    times: dict[str, list[float]] = {"rechunk": [], "move": []}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        a, b = sorted(client.nthreads())
        for i in range(repeats + 1):
            rechunk = rechunk_round(client)
            time.sleep(0.3)
            move = move_round(client, a, b)
            time.sleep(0.3)
            if i:
                times["rechunk"].append(rechunk)
                times["move"].append(move)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--settings", nargs="*", default=["false", "8MiB"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(run_one(opts.one, opts.repeats)))
        os._exit(0)
    times: dict[str, dict[str, list[float]]] = {s: {"rechunk": [], "move": []}
                                                for s in opts.settings}
    for _ in range(opts.clusters):
        for setting in opts.settings:
            out = subprocess.run([sys.executable, __file__, "--one", setting, "--repeats",
                                  str(opts.repeats)], capture_output=True, text=True,
                                 timeout=1200)
            if out.returncode:
                raise RuntimeError(out.stderr[-2000:])
            for kind, values in json.loads(out.stdout.strip().splitlines()[-1]).items():
                times[setting][kind].extend(values)
    print(f"# place-results A/B, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"medians (min-max) of {opts.repeats * opts.clusters} rounds, seconds")
    for setting, kinds in times.items():
        print(f"{setting:>8}: " + "   ".join(
            f"{kind} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"
            for kind, v in kinds.items()))


if __name__ == "__main__":
    main()
