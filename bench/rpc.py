"""Foundation benchmark: corral's rpc against a raw asyncio echo and dask's rpc.

Every server runs in a process of its own; corral and the raw echo use uvloop, dask its
defaults. Bandwidth compares a large payload sent with corral's rpc to a raw socket
``sendall``/``recv_into`` between two processes. Medians of several repetitions.
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

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _dask_env import dask_python  # noqa: E402
from _raw_socket import raw_bandwidth  # noqa: E402


def run_pair(kind: str, python: str = sys.executable) -> dict:
    server = subprocess.Popen([python, str(HERE / "_rpc_servers.py"), kind],
                              stdout=subprocess.PIPE, text=True, cwd=HERE)
    try:
        port = server.stdout.readline().strip()
        out = subprocess.run([python, str(HERE / "_rpc_clients.py"), kind, port],
                             capture_output=True, text=True, timeout=600, cwd=HERE)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


def corral_bandwidth(payload: object, nbytes: int, repeats: int) -> float:
    from corral.core import rpc

    server = subprocess.Popen([sys.executable, str(HERE / "_rpc_servers.py"), "corral"],
                              stdout=subprocess.PIPE, text=True, cwd=HERE)
    try:
        port = server.stdout.readline().strip()

        async def main() -> float:
            rates = []
            async with rpc(f"tcp://127.0.0.1:{port}") as r:
                await r.sink(data=b"warm up")
                for _ in range(repeats):
                    start = time.perf_counter()
                    assert await r.sink(data=payload) == nbytes
                    rates.append(nbytes / (time.perf_counter() - start))
            return statistics.median(rates)

        import uvloop

        return uvloop.run(main())
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 1 GB payloads")
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    print(f"# corral rpc benchmark — {os.cpu_count()} cores, Python {platform.python_version()},"
          " corral and raw echo on uvloop, dask on its defaults; medians")
    corral, raw = run_pair("corral"), run_pair("raw")
    python = dask_python()
    try:
        dask = run_pair("dask", str(python)) if python else {}
    except RuntimeError as e:
        print(f"dask: unavailable ({e})")
        dask = {}
    rows = [("round trip, µs", "rtt_us", "target <= 1.3x raw, <= 0.5x dask")]
    rows += [(f"calls/s, {c} concurrent", f"calls_per_s_{c}", "") for c in (10, 100)]
    print(f"{'measure':26} {'corral':>10} {'raw':>10} {'dask':>10} {'/raw':>7} {'/dask':>7}")
    for name, key, target in rows:
        c, r, d = corral[key], raw[key], dask.get(key)
        dask_text = f"{d:10,.1f}" if d else f"{'n/a':>10}"
        dask_ratio = f"{c / d:6.2f}x" if d else f"{'n/a':>7}"
        print(f"{name:26} {c:10,.1f} {r:10,.1f} {dask_text} {c / r:6.2f}x {dask_ratio}  {target}")
    bandwidth = {}
    for size in (100 * 2**20,) if opts.quick else (100 * 2**20, 2**30):
        repeats = 5 if size < 2**30 else 3
        array = np.frombuffer(os.urandom(2**20) * (size // 2**20), dtype="u1")
        raw_rate = raw_bandwidth(memoryview(array), repeats)
        for label, payload in (("bytes", array.tobytes()), ("numpy", array)):
            rate = corral_bandwidth(payload, size, repeats)
            bandwidth[f"{label}_{size >> 20}MiB"] = {"corral": rate, "raw": raw_rate}
            print(f"{label} {size >> 20:>5} MiB one way: corral {rate / 1e9:5.2f} GB/s, raw socket "
                  f"{raw_rate / 1e9:5.2f} GB/s = {rate / raw_rate:4.0%}  (target >= 80 %)")
            del payload
    if opts.json:
        Path(opts.json).write_text(json.dumps(
            {"corral": corral, "raw": raw, "dask": dask, "bandwidth": bandwidth}, indent=2))


if __name__ == "__main__":
    main()
