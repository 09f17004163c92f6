"""Work larger than memory, corral and dask.distributed side by side (issue 17).

Two workers of one thread, each limited to 500 MiB: 20 x 50 MiB results held then
summed; 1.8 GB of random numbers persisted then averaged; ``(x + x.T).sum()`` over
3.2 GB; a dataframe shuffle, groupby and merge over 1.1 GB. Printed per workload and
system: completed, wall time, peak RSS of each worker, bytes spilled to disk, worker
restarts. dask runs in the bench's own venv
(``_dask_env.py``). ``--scale 0.25`` shrinks every size (limits stay at 500 MiB).
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

WORKLOAD = str(HERE / "_memory_workload.py")


def run_corral(args: list[str], timeout: float) -> dict | None:
    done = subprocess.run([sys.executable, WORKLOAD, "corral", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if done.returncode != 0:
        print(f"corral run failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="size factor (1: full)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds a workload may take before it counts as not completed")
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    args = ["--scale", str(opts.scale), "--timeout", str(opts.timeout)]
    print(f"# memory: 2 workers x 1 thread, 500 MiB each, sizes x{opts.scale:g} — "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}")
    timeout = 4 * opts.timeout + 300
    figures = {"corral": run_corral(args, timeout),
               "dask": run_in_dask_env(WORKLOAD, "dask", *args, timeout=timeout)}
    print(f"{'workload':10} {'system':7} {'done':>5} {'wall s':>8} {'peak RSS MiB':>14} "
          f"{'spilled MiB':>12} {'restarts':>9}  error")
    names = next((list(f) for f in figures.values() if f), [])
    for name in names:
        for system, f in figures.items():
            r = (f or {}).get(name)
            if r is None:
                print(f"{name:10} {system:7} {'n/a':>5}")
                continue
            spilled = r.get("spilled_bytes")
            print(f"{name:10} {system:7} {'y' if r['completed'] else 'n':>5} "
                  f"{r['wall_s']:>8.1f} {'/'.join(map(str, r['peak_rss_mib'])):>14} "
                  f"{'n/a' if spilled is None else f'{spilled / 2**20:,.0f}':>12} "
                  f"{r['restarts']:>9}  {r.get('error') or '-'}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
