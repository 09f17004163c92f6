"""Latency of one small task, submit → result, against its physical limit and peers.

Sequential ``submit(inc, i).result()``, p50/p99, and 10 000 no-op tasks/s, for corral,
dask.distributed and Ray (each in its own venv, see ``_dask_env``; ``--no-dask`` and
``--no-ray`` skip them) and ``ProcessPoolExecutor(2)``; the physical limit is a raw round
trip of a small message between two processes. Medians of 5 repetitions; ratios printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _dask_env import run_in_dask_env, run_in_ray_env  # noqa: E402
from _latency_workload import REPEATS, SAMPLES, inc, noop  # noqa: E402


def _echo(port_queue) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port_queue.put(server.getsockname()[1])
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(64):
        conn.sendall(data)


def raw_round_trip_ms() -> float:
    """Median round trip of 32 bytes to another process over loopback TCP."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    echo = ctx.Process(target=_echo, args=(ports,))
    echo.start()
    sock = socket.create_connection(("127.0.0.1", ports.get()))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for _ in range(2000):
        start = time.perf_counter()
        sock.sendall(b"x" * 32)
        got = 0
        while got < 32:
            got += len(sock.recv(64))
        samples.append(time.perf_counter() - start)
    sock.close()
    echo.join()
    return statistics.median(samples) * 1e3


def process_pool() -> dict:
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(noop, range(100)))
        p50s, rates = [], []
        for _ in range(REPEATS):
            samples = []
            for i in range(SAMPLES):
                start = time.perf_counter()
                pool.submit(inc, i).result()
                samples.append(time.perf_counter() - start)
            p50s.append(statistics.median(samples) * 1e3)
            start = time.perf_counter()
            list(pool.map(noop, range(10_000)))
            rates.append(10_000 / (time.perf_counter() - start))
    return {"p50_ms": statistics.median(p50s), "tasks_per_s_10000": statistics.median(rates)}


def run_corral() -> dict:
    out = subprocess.run([sys.executable, str(HERE / "_latency_workload.py"), "corral"],
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-dask", action="store_true", help="skip dask.distributed")
    parser.add_argument("--no-ray", action="store_true", help="skip Ray")
    opts = parser.parse_args()
    print(f"# submit->result latency — {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    raw = raw_round_trip_ms()
    corral = run_corral()
    dask = {} if opts.no_dask else (
        run_in_dask_env(str(HERE / "_latency_workload.py"), "dask") or {})
    ray = {} if opts.no_ray else (
        run_in_ray_env(str(HERE / "_latency_workload.py"), "ray") or {})
    pool = process_pool()
    fmt = lambda v: "n/a" if v is None else f"{v:,.3f}"  # noqa: E731
    print(f"raw 2-process round trip: {raw:.3f} ms")
    print(f"{'measure':24} {'corral':>10} {'dask':>10} {'Ray':>10} {'PPE(2)':>10}  "
          f"{'/raw':>8} {'/dask':>8} {'/Ray':>8} {'/PPE':>8}")
    for key, name in (("p50_ms", "latency p50, ms"), ("p99_ms", "latency p99, ms"),
                      ("tasks_per_s_10000", "10 000 no-ops, tasks/s")):
        c, d, r, p = corral.get(key), dask.get(key), ray.get(key), pool.get(key)
        print(f"{name:24} {fmt(c):>10} {fmt(d):>10} {fmt(r):>10} {fmt(p):>10}  "
              f"{ratio(c, raw) if key != 'tasks_per_s_10000' else '':>8} "
              f"{ratio(c, d):>8} {ratio(c, r):>8} {ratio(c, p):>8}")
    print("targets: p50 <= 1 ms, <= 0.4x Ray, <= 0.1x dask; tasks/s >= 2x PPE(2)")


if __name__ == "__main__":
    main()
