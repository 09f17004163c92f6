"""Integration benchmark: dask collections via client.get, and Executor.map, same run.

dask.array ((x + x.T).mean(0).sum(), 256 chunks) and dask.bag (map/filter/sum over 200
partitions) computed with ``scheduler=client.get``; ``dask.persist`` of a 128 MB array
(through ``client.persist``: the data stays on the workers) and repeated computations
on the persisted array; 5 000 no-op calls through
``Executor.map`` with chunksize 1 and 100. Each on corral and on dask.distributed (its
own env), both LocalCluster with 2 worker processes x 1 thread, and without a cluster:
dask's threaded scheduler and ``ProcessPoolExecutor(2)`` in this process. And fib(12)
by tasks that launch tasks (``get_client`` + ``secede``/``rejoin``). The physical
limit for executor calls: raw asyncio round trips/s on loopback, 100 in flight (a call
needs at least one client-scheduler-worker exchange). Medians of 5 rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _dask_env import run_in_dask_env  # noqa: E402
from rpc import run_pair  # noqa: E402

WORKLOAD = str(HERE / "_integration_workload.py")


def run_here(system: str) -> dict:
    out = subprocess.run([sys.executable, WORKLOAD, system], capture_output=True, text=True,
                         timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    print(f"# corral integration benchmark — {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; medians of 5 rounds")
    corral, local = run_here("corral"), run_here("local")
    dask = run_in_dask_env(WORKLOAD, "dask") or {}
    raw_rate = run_pair("raw")["calls_per_s_100"]
    print(f"dask {corral['dask_version']} here, {dask.get('dask_version', 'n/a')} with "
          "dask.distributed")

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "n/a"

    print(f"\n{'client.get, seconds':32} {'corral':>8} {'dask':>8} {'threads':>8} "
          f"{'corral/dask':>12}")
    for name in ("array", "bag"):
        c, d, t = corral[f"{name}_s"], dask.get(f"{name}_s"), local[f"{name}_s"]
        label = f"{name} ({corral[f'{name}_tasks']} tasks)"
        print(f"{label:32} {c:8.3f} {d or float('nan'):8.3f} {t:8.3f} {ratio(c, d):>12}")
    print("(dask's threaded scheduler runs in one process and moves no data: a floor, "
          "not a peer)")

    print(f"\n{'persisted array, seconds':32} {'corral':>8} {'dask':>8} {'threads':>8} "
          f"{'corral/dask':>12}")
    for key, label in (("persist_s", "dask.persist, 64 x 2 MB chunks"),
                       ("on_persisted_s", "(y + y.T).mean(0).sum() on it")):
        c, d, t = corral[key], dask.get(key), local[key]
        print(f"{label:32} {c:8.3f} {d or float('nan'):8.3f} {t:8.3f} {ratio(c, d):>12}")

    print(f"\n{'Executor.map, calls/s':32} {'corral':>8} {'dask':>8} {'procpool':>8} "
          f"{'corral/dask':>12} {'corral/raw':>11}")
    for chunksize in (1, 100):
        key = f"map_calls_per_s_chunksize_{chunksize}"
        c, d, p = corral[key], dask.get(key), local[key]
        per_round_trip = f"{c / raw_rate:11.3f}" if chunksize == 1 else f"{'n/a':>11}"
        print(f"{f'{5_000:,} no-ops, chunksize {chunksize}':32} {c:8,.0f} "
              f"{d or float('nan'):8,.0f} {p:8,.0f} {ratio(c, d):>12} {per_round_trip}")
    print("(dask's executor ignores chunksize; with chunks a task is many calls, so the "
          "round-trip limit does not apply)")
    print(f"raw asyncio round trips/s on loopback, 100 in flight (physical limit): "
          f"{raw_rate:,.0f}")
    c, d = corral["fib_s"], dask.get("fib_s")
    print(f"\n{'tasks that launch tasks, seconds':32} {'corral':>8} {'dask':>8} "
          f"{'corral/dask':>12}")
    label = f"fib(12), {corral['fib_tasks']} tasks"
    print(f"{label:32} {c:8.3f} {d or float('nan'):8.3f} {ratio(c, d):>12}")
    print("(get_client + secede/rejoin on 2 one-thread workers; each call its own task)")
    if opts.json:
        Path(opts.json).write_text(json.dumps(
            {"corral": corral, "dask": dask, "local": local,
             "raw_round_trips_per_s": raw_rate}, indent=2))


if __name__ == "__main__":
    main()
