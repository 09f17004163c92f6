"""Transfer benchmark: a NumPy array worker to worker, corral (results placed in shared
memory as made, placed there when first sent, copied into it on every send, or the
socket) vs dask.distributed vs a raw loopback socket vs memcpy, in one run.

Each system: LocalCluster, 2 worker processes x 1 thread, client in a process of its
own (``_transfer_workload.py``). "transfer" is worker B fetching the array from worker
A, timed on B's event loop; "again" is the same fetch once more, right after the first,
as the raw push is timed (both ends awake); "task" adds the scheduling around a fetch (a
task on B taking the array, until its result is back); "make" is the producer's side (a
task on A making the array, which with results placed as made includes copying it into
a segment). The raw socket (``_raw_socket.py``) sends the same bytes between two
processes into fresh memory: "raw" as a push between two awake processes, "raw-f" as a
fetch (a request, then the bytes) after the same 0.2 s of quiet that starts each round
of corral and dask; "raw-r" as the push into memory touched before; "raw-t" as that push
through the send buffer corral gives a connection within a host
(``comm.local-send-buffer``), the fastest this socket went here; memcpy copies them
within one process into memory already touched (the physical limit). Medians of
``--repeats`` repetitions.
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
from pathlib import Path

import numpy as np

from corral import config
from corral.utils import parse_bytes

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _dask_env import run_in_dask_env  # noqa: E402
from _fresh_memory import fresh_memory_line  # noqa: E402
from _raw_socket import raw_bandwidth, raw_fetch_bandwidth  # noqa: E402
from _transfer_workload import QUIET  # noqa: E402

SIZES_MB = (10, 100, 500)


def run_corral(mode: str, sizes: tuple[int, ...], repeats: int) -> dict:
    args = [sys.executable, str(HERE / "_transfer_workload.py"), "corral", mode,
            *map(str, sizes), "--repeats", str(repeats)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def memcpy_rate(nbytes: int, repeats: int) -> float:
    source = np.ones(nbytes, dtype="u1")
    target = np.zeros(nbytes, dtype="u1")
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        rates.append(nbytes / (time.perf_counter() - start))
    return statistics.median(rates)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:5.2f}x" if a and b else "  n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES_MB), help="MB")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    sizes = tuple(opts.sizes)
    load = os.getloadavg()
    print(f"# corral transfer benchmark — {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"medians of {opts.repeats}")
    print(f"# {fresh_memory_line()}")
    shm = run_corral("shm", sizes, opts.repeats)
    send = run_corral("shm-send", sizes, opts.repeats)
    copy = run_corral("shm-copy", sizes, opts.repeats)
    sock = run_corral("socket", sizes, opts.repeats)
    dask = {} if opts.no_dask else run_in_dask_env(
        str(HERE / "_transfer_workload.py"), "dask", *map(str, sizes),
        "--repeats", str(opts.repeats), timeout=1200) or {}
    dask = {int(k): v for k, v in dask.items()}
    raw, reused, tuned, fetch, memcpy = {}, {}, {}, {}, {}
    send_buffer = parse_bytes(config.get("comm.local-send-buffer"))
    for size in sizes:
        payload = memoryview(np.ones(size * 10**6, dtype="u1"))
        raw[size] = raw_bandwidth(payload, opts.repeats)
        reused[size] = raw_bandwidth(payload, opts.repeats, reuse=True)
        tuned[size] = raw_bandwidth(payload, opts.repeats, reuse=True, send_buffer=send_buffer)
        fetch[size] = raw_fetch_bandwidth(size * 10**6, opts.repeats, pause=QUIET)
        memcpy[size] = memcpy_rate(size * 10**6, opts.repeats)
        del payload
    gb = lambda v: f"{v / 1e9:6.2f}" if v else "   n/a"  # noqa: E731
    for kind in ("transfer", "again", "task", "make"):
        print(f"\n{kind}: GB/s   {'shm':>6} {'send':>6} {'shm-cp':>6} {'socket':>6} {'dask':>6} "
              f"{'raw':>6} {'raw-r':>6} {'raw-t':>6} {'raw-f':>6} {'memcpy':>6}   shm/raw send/raw "
              f"shm-cp/raw socket/raw socket/raw-r socket/raw-t socket/raw-f send/dask "
              f"socket/dask")
        for size in sizes:
            s, e, c, k = (shm[size][kind], send[size][kind], copy[size][kind],
                          sock[size][kind])
            d = dask.get(size, {}).get(kind)
            print(f"{size:>5} MB       {gb(s)} {gb(e)} {gb(c)} {gb(k)} {gb(d)} {gb(raw[size])} "
                  f"{gb(reused[size])} {gb(tuned[size])} {gb(fetch[size])} "
                  f"{gb(memcpy[size])}   "
                  f"{ratio(s, raw[size]):>7} {ratio(e, raw[size]):>8} "
                  f"{ratio(c, raw[size]):>10} {ratio(k, raw[size]):>10} "
                  f"{ratio(k, reused[size]):>12} {ratio(k, tuned[size]):>12} "
                  f"{ratio(k, fetch[size]):>12} "
                  f"{ratio(e, d):>9} {ratio(k, d):>11}")
    print("\nshm: results placed in shared memory as they are made; send: placed there when "
          "first sent (the default); shm-cp: copied into it on every send; again: the fetch "
          "repeated at once; make: a task making the array, as a rate; raw: a push between "
          "two awake processes into fresh memory; raw-r: the same into memory touched "
          "before (corral reads a frame into the memory an earlier one left, once that is "
          "let go of); raw-t: that push through corral's send buffer within a host "
          f"({send_buffer // 1024} KiB); raw-f: a fetch (request, then the bytes) into "
          f"fresh memory after {QUIET:g} s of quiet, as each corral and dask round starts")
    print("targets: transfer send (the default) >= 2x raw at 500 MB; "
          "socket >= 0.9x raw at every size")
    if opts.json:
        figures = {"shm": shm, "shm-send": send, "shm-copy": copy, "socket": sock,
                   "dask": dask, "raw": raw, "raw_reused": reused, "raw_tuned": tuned,
                   "raw_fetch": fetch,
                   "memcpy": memcpy}
        Path(opts.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
