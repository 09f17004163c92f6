"""``python -m corral.simulation``: simulate a graph on many workers and print a summary."""

from __future__ import annotations

import argparse
import random

from corral.simulation.cluster import Simulation
from corral.simulation.graphs import GENERATORS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m corral.simulation",
        description="Run a task graph on simulated workers, in virtual time, with the real "
                    "scheduler and worker state machines.")
    parser.add_argument("--workers", type=int, default=100, help="simulated workers")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks in the graph (about)")
    parser.add_argument("--graph", choices=sorted(GENERATORS), default="mixed",
                        help="graph shape (default: a third each of trees, chains, shuffles)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same run")
    parser.add_argument("--kill", type=int, default=0, metavar="N",
                        help="kill N random workers, one every --kill-every seconds")
    parser.add_argument("--kill-every", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--rejoin", action="store_true",
                        help="a fresh worker joins in place of each killed one, a second later")
    parser.add_argument("--latency", type=float, default=0.001, help="seconds, each way")
    parser.add_argument("--bandwidth", type=float, default=1e9, help="bytes/s per transfer")
    opts = parser.parse_args(argv)

    graph = GENERATORS[opts.graph](opts.tasks, random.Random(opts.seed))
    sim = Simulation(opts.workers, nthreads=opts.threads, seed=opts.seed, latency=opts.latency,
                     bandwidth=opts.bandwidth)
    sim.submit(graph)
    for i in range(opts.kill):
        at = (i + 1) * opts.kill_every
        sim.kill(at)
        if opts.rejoin:
            sim.join(at + 1.0)
    summary = sim.run()
    print(f"# {len(graph):,} tasks ({opts.graph}) on {opts.workers:,} workers x "
          f"{opts.threads} thread(s), seed {opts.seed}")
    print("\n".join(summary.lines()))


if __name__ == "__main__":
    main()
