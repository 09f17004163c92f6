"""Fuzz at full size: malformed messages at a live scheduler and worker, then honest work.

The storm of ``tests/test_abuse_scale.py`` (built in ``tests/_storm.py``) at full size:
authenticated peers send fuzzed messages — random ops, arguments of the wrong types,
extension types nested hundreds deep, lists nested thousands deep, containers claiming
billions of items, random bytes — while others write random bytes before any
handshake. Reports the rate, each server's RSS before and after, whether both are
alive, and an honest computation's time and correctness right afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corral import Client
from tests import _storm


def inc(x: int) -> int:
    return x + 1


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def honest_run(cluster: dict) -> tuple[float, bool]:
    start = time.perf_counter()
    with Client(cluster["scheduler"], security=cluster["security"]) as client:
        exact = client.gather(client.map(inc, range(1000))) == list(range(1, 1001))
    return time.perf_counter() - start, exact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000,
                        help="fuzzed messages from authenticated peers (default 200 000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures here")
    opts = parser.parse_args()
    print(f"# corral fuzz benchmark — {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {opts.messages:,} messages, seed {opts.seed}")
    with tempfile.TemporaryDirectory() as tmp, _storm.live_cluster(Path(tmp)) as cluster:
        pids = {"scheduler": cluster["processes"][0].pid, "worker": cluster["processes"][1].pid}
        before_s, before_exact = honest_run(cluster)
        rss_before = {name: rss_mib(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        frames = asyncio.run(_storm.storm(cluster, opts.messages, seed=opts.seed))
        elapsed = time.perf_counter() - start
        alive = {name: p.poll() is None for name, p in zip(pids, cluster["processes"],
                                                            strict=True)}
        rss_after = {name: rss_mib(pid) if alive[name] else None for name, pid in pids.items()}
        after_s, after_exact = honest_run(cluster) if all(alive.values()) else (None, False)
    figures = {
        "messages": opts.messages, "frames": frames, "seconds": round(elapsed, 1),
        "messages_per_second": round(opts.messages / elapsed), "alive": alive,
        "rss_mib_before": {k: round(v) for k, v in rss_before.items()},
        "rss_mib_after": {k: v if v is None else round(v) for k, v in rss_after.items()},
        "honest_seconds_before": round(before_s, 2), "honest_exact_before": before_exact,
        "honest_seconds_after": after_s if after_s is None else round(after_s, 2),
        "honest_exact_after": after_exact,
    }
    print(f"{opts.messages:,} messages ({frames:,} frames) in {elapsed:.1f} s "
          f"({figures['messages_per_second']:,}/s)")
    for name in pids:
        print(f"{name:9} alive={alive[name]}  RSS {rss_before[name]:.0f} MiB before, "
              f"{rss_after[name] or float('nan'):.0f} MiB after")
    print(f"honest 1 000 tasks: {before_s:.2f} s before (exact={before_exact}), "
          f"{after_s if after_s is None else round(after_s, 2)} s after (exact={after_exact})")
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))
    return 0 if all(alive.values()) and after_exact else 1


if __name__ == "__main__":
    sys.exit(main())
