"""Work larger than memory, corral and dask.distributed side by side (issue 17).

Two workers of one thread, each limited to 500 MiB: 20 x 50 MiB results held then
summed; 1.8 GB of random numbers persisted then averaged; ``(x + x.T).sum()`` over
3.2 GB; a dataframe shuffle, groupby and merge over 1.1 GB. Printed per workload and
system: completed, wall time, peak RSS of each worker, bytes spilled to disk, worker
restarts, and corral's wall time over dask's. Each system runs ``--repeat`` times
(alternating): wall times are medians, peak RSS and restarts the worst of the runs, and
a workload counts as done only if every run finished. dask runs in the bench's own venv
(``_dask_env.py``). ``--scale 0.25`` shrinks every size (limits stay at 500 MiB).
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


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per workload: median wall time, the worst peak RSS and restarts, done if all were."""
    out: dict[str, dict] = {}
    for name in (runs[0] if runs else {}):
        rs = [r[name] for r in runs if name in r]
        peaks = max((r["peak_rss_mib"] for r in rs), key=lambda p: max(p, default=0))
        out[name] = {"completed": all(r["completed"] for r in rs),
                     "wall_s": statistics.median(r["wall_s"] for r in rs),
                     "peak_rss_mib": peaks,
                     "spilled_bytes": statistics.median(r.get("spilled_bytes") or 0 for r in rs),
                     "restarts": max(r["restarts"] for r in rs),
                     "error": next((r["error"] for r in rs if r.get("error")), None)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="size factor (1: full)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds a workload may take before it counts as not completed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per system")
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    args = ["--scale", str(opts.scale), "--timeout", str(opts.timeout)]
    print(f"# memory: 2 workers x 1 thread, 500 MiB each, sizes x{opts.scale:g} — "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}")
    timeout = 4 * opts.timeout + 300
    runs: dict[str, list[dict]] = {"corral": [], "dask": []}
    for _ in range(opts.repeat):
        for system, run in (("corral", lambda: run_corral(args, timeout)),
                            ("dask", lambda: run_in_dask_env(WORKLOAD, "dask", *args,
                                                             timeout=timeout))):
            figures = run()
            if figures:
                runs[system].append(figures)
    print(f"{'workload':10} {'system':7} {'done':>5} {'wall s':>8} {'peak RSS MiB':>14} "
          f"{'spilled MiB':>12} {'restarts':>9} {'vs dask':>8}  error")
    summary = {system: summarize(r) for system, r in runs.items()}
    names = next((list(f) for f in summary.values() if f), [])
    for name in names:
        walls = {system: (f.get(name) or {}).get("wall_s") for system, f in summary.items()}
        for system, f in summary.items():
            r = f.get(name)
            if r is None:
                print(f"{name:10} {system:7} {'n/a':>5}")
                continue
            spilled = r.get("spilled_bytes")
            ratio = (f"{r['wall_s'] / walls['dask']:.2f}x" if system == "corral"
                     and walls["dask"] else "")
            print(f"{name:10} {system:7} {'y' if r['completed'] else 'n':>5} "
                  f"{r['wall_s']:>8.1f} {'/'.join(map(str, r['peak_rss_mib'])):>14} "
                  f"{'n/a' if spilled is None else f'{spilled / 2**20:,.0f}':>12} "
                  f"{r['restarts']:>9} {ratio:>8}  {r.get('error') or '-'}")
    print(f"(medians of {opts.repeat}; targets: done, 0 restarts, peak RSS <= 550 MiB, "
          "corral <= 1.0x dask, <= 0.7x on the shuffle)")
    figures = {"runs": runs, "summary": summary}
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
