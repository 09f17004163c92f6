"""Adaptive scaling through a burst, corral and dask.distributed side by side (issue 19).

A burst of 2 000 tasks of 50 ms (``time.sleep``) on a ``LocalCluster`` of worker
processes with two threads each, adapting between 1 and 4 workers with the default
knobs (both systems: interval 1 s, wait count 3, target duration 5 s), against a fixed
cluster of 4 workers. Per system, medians of ``--repeat`` runs: time from submitting
the burst to the first extra worker joining, peak workers, wall time (and its ratio to
the fixed cluster's and to the physical limit, tasks x duration / threads), and time
from the burst's end back to one worker. Target: adaptive wall within 1.2x of fixed,
and a first scale-up sooner than dask's. dask runs in the bench's own venv
(``_dask_env.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _dask_env import run_in_dask_env  # noqa: E402

WORKLOAD = str(HERE / "_adaptive_workload.py")


def run_corral(args: list[str], timeout: float) -> dict[str, Any] | None:
    done = subprocess.run([sys.executable, WORKLOAD, "corral", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if done.returncode != 0:
        print(f"corral run failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=0.05)
    parser.add_argument("--maximum", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    args = ["--tasks", str(opts.tasks), "--duration", str(opts.duration), "--maximum",
            str(opts.maximum), "--threads", str(opts.threads), "--repeat", str(opts.repeat)]
    limit = opts.tasks * opts.duration / (opts.maximum * opts.threads)
    print(f"# adaptive: {opts.tasks} tasks x {opts.duration * 1000:g} ms, 1..{opts.maximum} "
          f"workers x {opts.threads} threads, medians of {opts.repeat} — {os.cpu_count()} "
          f"cores, load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    timeout = opts.repeat * (4 * limit + 240)
    figures = {"corral": run_corral(args, timeout),
               "dask": run_in_dask_env(WORKLOAD, "dask", *args, timeout=timeout)}
    print(f"{'system':7} {'cluster':9} {'wall s':>7} {'x fixed':>8} {'x limit':>8} "
          f"{'scale-up s':>11} {'peak':>5} {'to min s':>9}")
    summary: dict[str, dict[str, float | None]] = {}
    for system, runs in figures.items():
        if runs is None:
            print(f"{system:7} n/a")
            continue
        fixed = median(runs["fixed"], "wall_s")
        for mode in ("fixed", "adaptive"):
            r = runs[mode]
            wall = median(r, "wall_s")
            up = median(r, "first_scale_up_s")
            to_min = median(r, "back_to_minimum_s")
            peak = max(x["peak_workers"] for x in r)
            ratio = None if wall is None or not fixed else wall / fixed
            print(f"{system:7} {mode:9} {fmt(wall):>7} {fmt(ratio):>8} "
                  f"{fmt(None if wall is None else wall / limit):>8} "
                  f"{fmt(up) if mode == 'adaptive' else '-':>11} {peak:>5} "
                  f"{fmt(to_min) if mode == 'adaptive' else '-':>9}")
            if mode == "adaptive":
                summary[system] = {"wall_vs_fixed": ratio, "scale_up_s": up}
    corral, dask = summary.get("corral", {}), summary.get("dask", {})
    if corral.get("wall_vs_fixed") is not None:
        print(f"corral adaptive wall / fixed: {corral['wall_vs_fixed']:.2f} (target <= 1.2)")
    if corral.get("scale_up_s") and dask.get("scale_up_s"):
        print(f"first scale-up, corral / dask: {corral['scale_up_s'] / dask['scale_up_s']:.2f} "
              f"(target < 1)")
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
