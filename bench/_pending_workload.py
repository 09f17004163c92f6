"""Scheduler RSS per pending task, end to end, written once for corral and dask.distributed.

Run inside either environment: ``python _pending_workload.py corral|dask PENDING REPEATS``.
Each repetition starts a real scheduler process and one single-thread worker process
from the system's own command line, submits one blocking task and PENDING tasks that
need it, waits until the scheduler holds them all, and reads the scheduler process's
RSS. Prints one JSON object with the median bytes per pending task.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def blocker(seconds):
    time.sleep(seconds)
    return 0


def plus(x, y):
    return x


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def commands(system: str, scheduler_file: str) -> tuple[list[str], list[str]]:
    if system == "corral":
        cli = [sys.executable, "-m", "corral.cli"]
        return ([*cli, "scheduler", "--no-auth", "--dashboard-address", "none",
                 "--scheduler-file", scheduler_file],
                [*cli, "worker", "--scheduler-file", scheduler_file, "--nthreads", "1",
                 "--no-nanny"])
    return ([sys.executable, "-m", "distributed.cli.dask_scheduler", "--no-dashboard",
             "--scheduler-file", scheduler_file],
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
             scheduler_file, "--nthreads", "1", "--no-nanny"])


def scheduler_tasks(system: str, client) -> int:
    if system == "corral":
        return sum(client.scheduler_info()["tasks"].values())
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def one_run(system: str, pending: int) -> float:
    if system == "corral":
        from corral import Client
    else:
        from dask.distributed import Client  # type: ignore[no-redef]
    with tempfile.TemporaryDirectory() as tmp:
        scheduler_file = str(Path(tmp) / "scheduler.json")
        sched_cmd, worker_cmd = commands(system, scheduler_file)
        quiet = subprocess.DEVNULL
        sched = subprocess.Popen(sched_cmd, stdout=quiet, stderr=quiet)
        worker = None
        try:
            wait_for(lambda: Path(scheduler_file).exists(), 60, "scheduler file")
            worker = subprocess.Popen(worker_cmd, stdout=quiet, stderr=quiet)
            client = Client(scheduler_file=scheduler_file)
            try:
                wait_for(lambda: len(client.nthreads()) == 1, 60, "worker")
                client.submit(plus, 1, 2, pure=False).result()  # every module loaded
                gc.collect()
                time.sleep(1.0)
                before = psutil.Process(sched.pid).memory_info().rss
                block = client.submit(blocker, 600, pure=False)
                waiting = client.map(plus, range(pending), [block] * pending, pure=False)
                wait_for(lambda: scheduler_tasks(system, client) >= pending + 1, 600,
                         "tasks at the scheduler")
                time.sleep(1.0)  # the last messages handled, the allocator settled
                after = psutil.Process(sched.pid).memory_info().rss
                del waiting, block
            finally:
                client.close()
        finally:
            for proc in (worker, sched):
                if proc is not None:
                    proc.kill()
                    proc.wait()
    return (after - before) / pending


def main() -> None:
    system, pending, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    runs = [one_run(system, pending) for _ in range(repeats)]
    print(json.dumps({"bytes_per_pending_task": statistics.median(runs), "runs": runs,
                      "pending": pending}))
    os._exit(0)


if __name__ == "__main__":
    main()
