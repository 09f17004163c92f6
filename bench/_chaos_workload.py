"""The chaos driver, written once against the API corral and dask.distributed share.

A graph of ``chains`` chains of ``length`` NumPy steps (every 20th step makes a 5 MB
array, every 10th step also reads the neighbouring chain) and a tree reduction over
the chain ends runs on 3 nanny-supervised worker processes while a random worker
process (never its nanny) is SIGKILLed every 1-2 s. A run is *exact* when the result
equals the same graph computed here, serially.

Run as a script inside either environment: ``python _chaos_workload.py corral|dask
[--runs N] [--chains C] [--length L] [--timeout S]``; prints one JSON object last.
``tests/test_resilience.py`` runs a small version through ``run_once``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from typing import Any

import numpy as np
import psutil

MOD = 1_000_003
SMALL = 1_000  # int64 items: 8 kB intermediates
BIG = 5 * 2**20 // 8  # 5 MB intermediates, every BIG_EVERY-th step
BIG_EVERY = 20
LINK_EVERY = 10  # every 10th step also reads the neighbouring chain's previous step


def step(x: np.ndarray, i: int, pause: float, other: np.ndarray | None = None) -> np.ndarray:
    """One step of a chain; ``pause`` seconds of sleep stretch a small graph (tests)."""
    if pause:
        time.sleep(pause)
    y = (x[:SMALL] * 31 + i) % MOD
    if other is not None:
        y = (y + other[:SMALL]) % MOD
    np.sort(np.sin(np.arange(20_000.0)))  # ~1 ms of real NumPy work per step
    if i % BIG_EVERY == 0:
        big = np.zeros(BIG, dtype=np.int64)
        big[:SMALL] = y
        return big
    return y


def start(c: int) -> np.ndarray:
    return np.arange(SMALL, dtype=np.int64) * (c + 1) % MOD


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[:SMALL] + b[:SMALL]) % MOD


def checksum(a: np.ndarray) -> int:
    return int(a[:SMALL].sum())


def build(submit: Any, chains: int, length: int, pause: float = 0.0) -> Any:
    """The graph through ``submit(fn, *args, key=...)``; returns what makes the result.

    Only the last layer is held, so finished intermediates are released as they would
    be in a dask collection: a lost result must be recomputed from its lineage."""
    layer = [submit(start, c, key=f"start-{c}") for c in range(chains)]
    for i in range(1, length):
        layer = [
            submit(step, layer[c], i, pause, layer[(c + 1) % chains], key=f"step-{c}-{i}")
            if i % LINK_EVERY == 0 else submit(step, layer[c], i, pause, key=f"step-{c}-{i}")
            for c in range(chains)
        ]
    level = 0
    while len(layer) > 1:
        layer = [submit(add, *layer[j:j + 2], key=f"add-{level}-{j}") if j + 1 < len(layer)
                 else layer[j] for j in range(0, len(layer), 2)]
        level += 1
    return submit(checksum, layer[0], key="checksum")


def expected(chains: int, length: int) -> int:
    """The same graph, computed serially here."""
    return build(lambda fn, *args, key: fn(*args), chains, length)


def worker_pids(client: Any) -> list[int]:
    """The worker processes (never their nannies) of ``client``'s cluster."""
    workers = client.scheduler_info()["workers"].values()
    if all("pid" in w for w in workers):  # corral reports them
        return [w["pid"] for w in workers]
    # dask does not: its nannies live in this process, their workers are its children
    return [p.pid for p in psutil.Process().children() if _spawned_worker(p)]


def _spawned_worker(process: psutil.Process) -> bool:
    try:
        line = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return "spawn_main" in line and "resource_tracker" not in line  # not its helper


def run_once(client: Any, chains: int, length: int, *, chaos: bool, timeout: float,
             rng: random.Random, want: int, pause: float = 0.0, max_kills: int = 10**9,
             min_workers: int = 1) -> dict[str, Any]:
    """One computation, with a random worker SIGKILLed every 1-2 s from the first submit
    on if ``chaos`` (at most ``max_kills``, and only while ``min_workers`` are up: a test
    on a busy machine, where a restart takes longer than the kill interval, must still
    make progress)."""
    stop = threading.Event()
    kills = [0]

    def killer() -> None:
        while kills[0] < max_kills and not stop.wait(rng.uniform(1, 2)):
            try:
                pids = worker_pids(client)
                if len(client.nthreads()) >= min_workers and pids and not stop.is_set():
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills[0] += 1
            except ProcessLookupError:
                pass  # already dead, not yet noticed by the scheduler
            except Exception as e:  # a query failed mid-chaos: try again at the next tick
                print(f"chaos: {type(e).__name__}: {e}", file=sys.stderr)

    thread = threading.Thread(target=killer, daemon=True)
    began = time.perf_counter()
    if chaos:
        thread.start()
    outcome: dict[str, Any] = {}
    inputs: dict[str, list[str]] = {}  # key → the keys it reads: to say where a run stuck

    def submit(fn: Any, *args: Any, key: str) -> Any:
        inputs[key] = [a.key for a in args if hasattr(a, "key")]
        return client.submit(fn, *args, key=key, pure=False)

    try:
        result = build(submit, chains, length, pause)
        value = result.result(timeout=max(1.0, timeout - (time.perf_counter() - began)))
        outcome["outcome"] = "exact" if value == want else f"wrong: {value} != {want}"
    except TimeoutError:
        outcome["outcome"] = f"timeout after {timeout:g} s"
        outcome["stuck"] = where_stuck(client, inputs)
    except Exception as e:
        outcome["outcome"] = f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        stop.set()
    outcome["seconds"] = time.perf_counter() - began
    if chaos:
        thread.join()
    outcome["kills"] = kills[0]
    return outcome


def where_stuck(client: Any, inputs: dict[str, list[str]]) -> dict[str, Any]:
    """After a timeout: the scheduler's last state of each key, and the story of the first
    few unfinished keys whose inputs are all in memory (where the run stopped moving)."""
    try:
        story = client.story(*inputs)
        last: dict[str, str] = {}
        for step in story:
            if step.get("where") == "scheduler" and step.get("transitions"):
                last[step["key"]] = step["transitions"][-1][1]
        unfinished = [k for k, state in last.items() if state not in ("memory", "released")]
        frontier = [k for k in unfinished
                    if all(last.get(d) == "memory" for d in inputs[k])][:10]
        states: dict[str, int] = {}
        for state in last.values():
            states[state] = states.get(state, 0) + 1
        # Each worker as the scheduler sees it (paused? how much queued?): a run stuck
        # with tasks in no-worker while workers are listed points at workers that take
        # no tasks.
        workers = {a: {k: w.get(k) for k in ("processing", "paused", "pid", "keys")}
                   for a, w in client.scheduler_info()["workers"].items()}
        return {"states": states, "processing": client.processing(), "frontier": frontier,
                "workers": workers,
                "stories": [s for s in story if s["key"] in frontier[:3]]}
    except Exception as e:  # dask's story has another shape; or the cluster is gone
        return {"error": f"{type(e).__name__}: {e}"}


def wait_for_workers(client: Any, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(client.nthreads()) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} workers after {timeout} s")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=["corral", "dask"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--chains", type=int, default=50)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    if opts.system == "corral":
        from corral import Client, LocalCluster

        def cluster() -> Any:
            return LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=None)
    else:
        from dask.distributed import Client, LocalCluster

        def cluster() -> Any:
            return LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=None)
    want = expected(opts.chains, opts.length)
    rng = random.Random(opts.seed)
    runs: dict[str, list[dict[str, Any]]] = {"fault_free": [], "chaos": []}
    for chaos in (False, True):
        for _ in range(opts.runs if chaos else max(1, opts.runs // 3)):
            out: dict[str, Any] | None = None
            began = time.perf_counter()
            try:
                with cluster() as c, Client(c.scheduler_address) as client:
                    wait_for_workers(client, 3)
                    out = run_once(client, opts.chains, opts.length, chaos=chaos,
                                   timeout=opts.timeout, rng=rng, want=want)
            except Exception as e:  # the cluster failed to start or to close (dask's client
                # asserted in its reconnect on a loaded machine): one failed run, not every figure
                if out is None:
                    out = {"outcome": f"cluster: {type(e).__name__}: {str(e)[:200]}",
                           "seconds": time.perf_counter() - began, "kills": 0}
            runs["chaos" if chaos else "fault_free"].append(out)
            print(opts.system, "chaos" if chaos else "fault-free", out, file=sys.stderr,
                  flush=True)
    print(json.dumps(runs))
    os._exit(0)  # skip slow interpreter teardown of the clusters' threads


if __name__ == "__main__":
    main()
