"""Client side of the partition test, run inside the scheduler's network namespace.

The test process lives in the host's namespace and cannot reach the namespaced
scheduler, so this script does the client's part and reports what it sees as JSON
lines on stdout (with wall-clock times, comparable with the test's own clock):

    ready     two workers registered
    running   enough tasks finished that both workers hold data (the test cuts a link now)
    workers   the set of registered workers changed
    result    the reduction's value
    rejoined  two workers registered again (after the test restores the link)
    check     a task pinned to each worker ran in that worker's process

Its functions are defined in ``__main__``, so they travel by value to the workers.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from corral import Client
from corral.security import Security

CHAINS, LENGTH = 20, 30


def step(x, delay=0.02):
    time.sleep(delay)
    return x + 1


def total(*xs):
    return sum(xs)


def pid():
    import os

    return os.getpid()


_say_lock = threading.Lock()  # the main and the watcher thread both report


def say(event: str, **fields) -> None:
    # print() writes the text and the newline separately: two threads printing at once
    # could put two events on one line.
    with _say_lock:
        print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def wait_for_workers(client: Client, n: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.scheduler_info()["workers"]
        if len(workers) == n:
            return workers
        time.sleep(0.05)
    raise TimeoutError(f"{n} workers did not register within {timeout}s")


def watch_membership(client: Client, stop: threading.Event) -> None:
    """Report each change in the registered workers, as soon as it is visible."""
    seen: set[str] = set()
    while not stop.is_set():
        current = set(client.scheduler_info()["workers"])
        if current != seen:
            say("workers", addresses=sorted(current))
            seen = current
        time.sleep(0.05)


def main(address: str, token: str) -> None:
    with Client(address, security=Security(token=token)) as client:
        say("ready", workers=sorted(wait_for_workers(client, 2, timeout=60)))
        stop = threading.Event()
        watcher = threading.Thread(target=watch_membership, args=(client, stop), daemon=True)
        watcher.start()
        steps, ends = [], []
        for c in range(CHAINS):
            f = client.submit(step, c * 1000, key=f"chain-{c}-0")
            steps.append(f)
            for i in range(1, LENGTH):
                f = client.submit(step, f, key=f"chain-{c}-{i}")
                steps.append(f)
            ends.append(f)
        result = client.submit(total, *ends, key="reduction")
        while sum(f.done() for f in steps) < len(steps) // 5:
            time.sleep(0.02)
        say("running", done=sum(f.done() for f in steps), of=len(steps))
        say("result", value=result.result(timeout=120),
            expected=sum(c * 1000 + LENGTH for c in range(CHAINS)))
        del steps, ends, result
        workers = wait_for_workers(client, 2, timeout=90)
        say("rejoined", workers=sorted(workers))
        pinned = {a: client.submit(pid, workers=[a], pure=False) for a in workers}
        ran_in = {a: f.result(timeout=30) for a, f in pinned.items()}
        say("check", ok=all(ran_in[a] == w["pid"] for a, w in workers.items()),
            workers=sorted(ran_in))
        stop.set()
        watcher.join()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
