"""``corral demo``: a data-local computation on a local cluster, explained as it runs.

Eight partitions of random samples are generated *on* the workers, summarised where
they live (only small summaries move), combined into one histogram, and then every
partition is compared with its neighbour (that step has to move data, and the worker
holding the larger input is chosen to run it). The demo prints the result, how many
bytes crossed between workers against how many were used where they lay, and timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from corral.client import Client, progress
from corral.deploy import LocalCluster
from corral.worker.context import get_worker

PARTITIONS = 8
SAMPLES = 2_000_000  # float64: 16 MB a partition
BINS = np.linspace(-5, 5, 41)


def make_partition(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SAMPLES)


def summarize(part: np.ndarray) -> dict[str, Any]:
    counts, _ = np.histogram(part, BINS)
    return {"n": part.size, "sum": float(part.sum()), "sumsq": float((part**2).sum()),
            "counts": counts}


def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    n = sum(s["n"] for s in summaries)
    mean = sum(s["sum"] for s in summaries) / n
    var = sum(s["sumsq"] for s in summaries) / n - mean**2
    counts = sum(s["counts"] for s in summaries)
    return {"n": n, "mean": mean, "std": var**0.5, "counts": counts}


def neighbour_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a[: len(b)], b[: len(a)])[0, 1])


def transfer_stats() -> dict[str, int]:
    return dict(get_worker().stats)


def _histogram_lines(counts: np.ndarray, width: int = 40) -> list[str]:
    peak = counts.max() or 1
    lines = []
    for left, count in zip(BINS[:-1:4], counts.reshape(-1, 4).sum(axis=1), strict=True):
        bar = "█" * int(width * count / (peak * 4))
        lines.append(f"  {left:+5.1f} {bar}")
    return lines


def run_demo(echo: Callable[[str], Any] = print, n_workers: int = 2) -> dict[str, Any]:
    started = time.perf_counter()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1) as cluster:
        echo(f"local cluster: scheduler {cluster.scheduler_address}, {n_workers} worker processes")
        with Client(cluster.scheduler_address) as client:
            echo(f"dashboard, while the demo runs: {client.dashboard_link}")
            ready = time.perf_counter()
            parts = client.map(make_partition, range(PARTITIONS))
            summaries = client.map(summarize, parts)
            total = client.submit(combine, summaries)
            pairs = [client.submit(neighbour_correlation, parts[i], parts[i + 1])
                     for i in range(PARTITIONS - 1)]
            work = [*parts, *summaries, *pairs, total]
            progress(work)
            result = total.result()
            correlations = client.gather(pairs)
            placement = client.who_has(parts)
            stats = client.run(transfer_stats)
            elapsed = time.perf_counter() - ready

    moved = sum(s["fetched_bytes"] for s in stats.values())
    in_place = sum(s["local_input_bytes"] for s in stats.values())
    echo(f"{result['n']:,} samples: mean {result['mean']:+.4f}, std {result['std']:.4f}")
    echo("histogram:")
    for line in _histogram_lines(result["counts"]):
        echo(line)
    echo(f"neighbour correlations: max |r| = {max(abs(c) for c in correlations):.4f}")
    spread = {w: sum(1 for holders in placement.values() if w in holders) for w in stats}
    echo(f"partitions per worker: {sorted(spread.values())}")
    echo(f"data moved between workers: {moved / 1e6:.1f} MB; "
         f"used where it lay: {in_place / 1e6:.1f} MB")
    echo(f"computed in {elapsed:.2f} s ({time.perf_counter() - started:.2f} s with startup)")
    return {"result": result, "moved": moved, "in_place": in_place, "elapsed": elapsed}
