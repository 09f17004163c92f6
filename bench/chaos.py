"""Chaos benchmark: exact results while workers are SIGKILLed, corral vs dask.distributed.

The driver (``_chaos_workload.py``) runs the same graph on each system — 50 chains x 100
NumPy steps, 5 MB intermediates every 20th step, cross-chain links, a tree reduction:
5 049 tasks on 3 nanny-supervised worker processes x 1 thread — while a random worker
process is SIGKILLed every 1-2 s, and a few times without faults. dask.distributed
runs in the bench's own venv (``_dask_env.py``). Printed: exact runs out of N, the
median wall time under chaos and fault-free, and their ratio (the cost of the chaos).
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

WORKLOAD = str(HERE / "_chaos_workload.py")


def run_corral(args: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, WORKLOAD, "corral", *args], capture_output=True,
                         text=True, check=True, timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(runs: dict[str, list[dict[str, Any]]] | None) -> dict[str, Any]:
    if not runs:
        return {}
    chaos, calm = runs["chaos"], runs["fault_free"]
    exact = [r for r in chaos if r["outcome"] == "exact"]
    failures = sorted({r["outcome"] for r in chaos if r["outcome"] != "exact"})
    calm_exact = [r["seconds"] for r in calm if r["outcome"] == "exact"]
    chaos_s = statistics.median(r["seconds"] for r in exact) if exact else None
    calm_s = statistics.median(calm_exact) if calm_exact else None
    return {"exact": f"{len(exact)}/{len(chaos)}", "chaos_s": chaos_s, "fault_free_s": calm_s,
            "ratio": chaos_s / calm_s if chaos_s and calm_s else None,
            "kills": statistics.median(r["kills"] for r in chaos) if chaos else 0,
            "failures": failures + sorted({f"fault-free: {r['outcome']}" for r in calm
                                           if r["outcome"] != "exact"}),
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="3 chaos runs of a 20 x 50 graph instead of 10 of 50 x 100")
    parser.add_argument("--runs", type=int, help="chaos runs per system (10; quick: 3)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds a run may take before it counts as failed")
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    runs = opts.runs or (3 if opts.quick else 10)
    args = ["--runs", str(runs), "--timeout", str(opts.timeout)]
    if opts.quick:
        args += ["--chains", "20", "--length", "50"]
    timeout = 4 * 3600
    print(f"# chaos: {'quick, ' if opts.quick else ''}{runs} runs, a worker SIGKILLed every "
          f"1-2 s, {opts.timeout:g} s allowed per run — "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}")
    figures = {"corral": summary(run_corral(args, timeout)),
               "dask": summary(run_in_dask_env(WORKLOAD, "dask", *args, timeout=timeout))}
    fmt = lambda v: "n/a" if v is None else f"{v:,.1f}"  # noqa: E731
    print(f"{'system':10} {'exact':>7} {'chaos s':>9} {'calm s':>9} {'ratio':>7} "
          f"{'kills':>6}  failures")
    for system, f in figures.items():
        if not f:
            print(f"{system:10} {'n/a':>7}")
            continue
        print(f"{system:10} {f['exact']:>7} {fmt(f['chaos_s']):>9} {fmt(f['fault_free_s']):>9} "
              f"{fmt(f['ratio']):>7} {fmt(f['kills']):>6}  {'; '.join(f['failures']) or '-'}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
