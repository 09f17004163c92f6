"""Task benchmarks: corral vs dask.distributed vs ProcessPoolExecutor, same run.

Both clusters: LocalCluster with 2 worker processes x 1 thread, scheduler and client in
the benchmarking process (so "bytes per pending task" covers scheduler + client).
The physical limit for the transfer is a raw loopback socket between two processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _dask_env import run_in_dask_env  # noqa: E402
from _raw_socket import raw_bandwidth  # noqa: E402
from _task_workloads import noop  # noqa: E402


def run_corral(quick: bool) -> dict:
    args = [sys.executable, str(HERE / "_task_workloads.py"), "corral"] + (["--quick"] * quick)
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_process_pool(quick: bool) -> dict:
    out = {}
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(noop, range(100)))
        for n in (1_000, 10_000) if quick else (1_000, 10_000, 100_000):
            start = time.perf_counter()
            list(pool.map(noop, range(n)))
            out[f"tasks_per_s_{n}"] = n / (time.perf_counter() - start)
        samples = []
        for i in range(300):
            start = time.perf_counter()
            pool.submit(noop, i).result()
            samples.append(time.perf_counter() - start)
        out["latency_ms"] = statistics.median(samples) * 1e3
    return out


def raw_socket_bandwidth(nbytes: int = 200 * 2**20) -> float:
    return raw_bandwidth(memoryview(bytearray(os.urandom(1 << 20)) * (nbytes >> 20)), 3)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 100 000-task runs")
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    print(f"# corral task benchmarks — {os.cpu_count()} cores, Python {platform.python_version()}")
    corral = run_corral(opts.quick)
    dask = run_in_dask_env(str(HERE / "_task_workloads.py"), "dask",
                           *(["--quick"] if opts.quick else [])) or {}
    pool = run_process_pool(opts.quick)
    raw = raw_socket_bandwidth()
    rows = []
    for n in (1_000, 10_000, 100_000):
        key = f"tasks_per_s_{n}"
        if key in corral:
            rows.append((f"no-op tasks/s, {n:,} tasks", corral[key], dask.get(key), pool.get(key),
                         ratio(corral[key], dask.get(key)), "target >= 5x dask at 10 000"))
    rows.append(("submit->result latency, ms", corral["latency_ms"], dask.get("latency_ms"),
                 pool.get("latency_ms"), ratio(corral["latency_ms"], dask.get("latency_ms")),
                 "target <= 0.2x dask"))
    rows.append(("200 MB worker->worker, GB/s", corral["transfer_bytes_per_s"] / 1e9,
                 (dask.get("transfer_bytes_per_s") or 0) / 1e9 or None, raw / 1e9,
                 ratio(corral["transfer_bytes_per_s"], raw) + " of raw socket",
                 "target >= 0.8x raw"))
    rows.append(("RSS bytes per pending task", corral["bytes_per_pending_task"],
                 dask.get("bytes_per_pending_task"), None,
                 ratio(corral["bytes_per_pending_task"], dask.get("bytes_per_pending_task")),
                 "target <= 0.5x dask"))
    print(f"{'measure':32} {'corral':>12} {'dask':>12} {'PPE/raw':>12}  {'ratio':>22}  target")
    for name, c, d, p, r, target in rows:
        fmt = lambda v: "n/a" if v is None else f"{v:,.2f}"  # noqa: E731
        print(f"{name:32} {fmt(c):>12} {fmt(d):>12} {fmt(p):>12}  {r:>22}  {target}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(
            {"corral": corral, "dask": dask, "process_pool": pool, "raw_bytes_per_s": raw},
            indent=2))


if __name__ == "__main__":
    main()
