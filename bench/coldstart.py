"""Cold start: a fresh process that starts a 2-worker ``LocalCluster``, runs one task and
closes, timed from launch to exit — corral, dask.distributed (in its own venv, see
``_dask_env``; ``--no-dask`` skips it), ``ProcessPoolExecutor(2)`` doing the same one
task, and the bare interpreter's start (the physical limit). Medians of 5 runs each,
interleaved so that a noisy moment hurts every system alike; ratios printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _dask_env import dask_python  # noqa: E402

WORKLOAD = str(HERE / "_coldstart_workload.py")


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, timeout=120, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-dask", action="store_true", help="skip dask.distributed")
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    print(f"# cold start — {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    dask = None if opts.no_dask else dask_python()
    commands = {
        "interpreter": [sys.executable, "-c", "pass"],
        "ProcessPool(2)": [sys.executable, WORKLOAD, "pool"],
        "corral": [sys.executable, WORKLOAD, "corral"],
    }
    if dask is not None:
        commands["dask"] = [str(dask), WORKLOAD, "dask"]
    for command in commands.values():  # warm the page cache: a first start reads from disk
        seconds(command)
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(opts.repeats):
        for name, command in commands.items():
            runs[name].append(seconds(command))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    for name, median in medians.items():
        spread = f"{min(runs[name]):.3f}-{max(runs[name]):.3f}"
        print(f"{name:16} {median:7.3f} s  (runs {spread})")
    corral = medians["corral"]
    print(f"corral / interpreter {corral / medians['interpreter']:.1f}x, "
          f"corral / ProcessPool(2) {corral / medians['ProcessPool(2)']:.2f}x", end="")
    if "dask" in medians:
        print(f", corral / dask {corral / medians['dask']:.2f}x (target <= 0.6x)")
    else:
        print()


if __name__ == "__main__":
    main()
