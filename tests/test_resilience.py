"""Resilience on real processes: nannies, killed and blocked workers, retries, memory limits.

Every cluster here has nanny-supervised worker processes; workers are killed with real
signals and the tests check that results stay exact and the cluster heals.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import psutil
import pytest

from corral import Client, LocalCluster, wait
from corral.exceptions import DataLostError, KilledWorker
from tests._helpers import wait_until_blocking

pytestmark = pytest.mark.usefixtures("no_leaks")


def step(x, delay=0.01):
    time.sleep(delay)
    return x + 1


def total(*xs):
    return sum(xs)


def die():
    os._exit(1)


def flaky(counter: str, failures: int):
    """Fails with ValueError on its first ``failures`` calls (counted in a file)."""
    path = Path(counter)
    calls = int(path.read_text()) if path.exists() else 0
    path.write_text(str(calls + 1))
    if calls < failures:
        raise ValueError(f"attempt {calls + 1} fails")
    return calls + 1


def hog(nbytes, seconds=10):
    import numpy as np

    block = np.ones(nbytes, dtype="u1")  # touched, so it counts in RSS
    time.sleep(seconds)
    return int(block[0])


def block_loop_once(flag: str, seconds: float):
    """Hold the GIL (a C call through PyDLL keeps it) the first time only."""
    import ctypes

    path = Path(flag)
    if not path.exists():
        path.write_text("blocked")
        ctypes.PyDLL(None).sleep(int(seconds))
    return "done"


def worker_pids(client) -> dict[str, int]:
    return {a: w["pid"] for a, w in client.scheduler_info()["workers"].items()}


def no_live_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=3, threads_per_worker=1) as c:
        yield c
    wait_until_blocking(lambda: not no_live_children(), timeout=10, what=no_live_children)


@pytest.fixture
def client(cluster):
    with Client(cluster.scheduler_address) as c:
        wait_until_blocking(lambda: len(c.nthreads()) == 3, timeout=30)
        yield c


@pytest.mark.timeout(150)
def test_chaos_sigkill_a_random_worker_every_1_to_2_s_result_exact(client):
    """bench/chaos.py's driver, smaller: 12 chains x 40 steps with cross-chain links, 5 MB
    intermediates and a tree reduction, while a random worker is SIGKILLed every 1-2 s
    (up to 6 times, and only while all 3 are up)."""
    from bench import _chaos_workload as chaos

    chains, length = 12, 40  # steps sleep 20 ms: mostly waiting, so a busy machine is fine
    out = chaos.run_once(client, chains, length, chaos=True, timeout=100, rng=random.Random(7),
                         want=chaos.expected(chains, length), pause=0.02, max_kills=6,
                         min_workers=3)
    assert out["outcome"] == "exact", out
    assert out["kills"] >= 2, "the computation ended before the chaos began; make it longer"
    wait_until_blocking(lambda: len(client.nthreads()) == 3, timeout=30)


@pytest.mark.timeout(120)
def test_task_that_kills_every_worker_becomes_killed_worker(client):
    doomed = client.submit(die, pure=False)
    with pytest.raises(KilledWorker, match="die"):
        doomed.result(timeout=90)
    wait_until_blocking(lambda: len(client.nthreads()) == 3, timeout=30)
    assert client.gather(client.map(step, range(20), delay=0)) == list(range(1, 21))


def test_retries_rerun_then_surface_the_last_exception(client, tmp_path):
    ok = client.submit(flaky, str(tmp_path / "a"), 2, retries=2, pure=False)
    assert ok.result(timeout=30) == 3
    bad = client.submit(flaky, str(tmp_path / "b"), 2, retries=1, pure=False)
    with pytest.raises(ValueError, match="attempt 2 fails"):
        bad.result(timeout=30)


def test_client_restart_replaces_worker_processes(client):
    before = set(worker_pids(client).values())
    f = client.submit(step, 1, delay=0)
    assert f.result(timeout=30) == 2
    client.restart()
    after = set(worker_pids(client).values())
    assert len(after) == 3
    assert not before & after
    assert client.submit(step, 2, delay=0, pure=False).result(timeout=30) == 3


@pytest.mark.timeout(120)
def test_memory_limit_restarts_worker_and_other_tasks_finish():
    options = ["--memory-limit", "300MiB"]
    with LocalCluster(n_workers=2, threads_per_worker=1, worker_options=options) as cluster, \
            Client(cluster.scheduler_address) as client:
        pids = set(worker_pids(client).values())
        greedy = client.submit(hog, 1_000_000_000, pure=False)
        others = client.map(step, range(30), delay=0.05)
        assert client.gather(others, timeout=90) == list(range(1, 31))
        with pytest.raises(KilledWorker):
            greedy.result(timeout=90)
        wait_until_blocking(lambda: len(client.nthreads()) == 2, timeout=30)
        assert set(worker_pids(client).values()) != pids


@pytest.mark.timeout(120)
def test_blocked_worker_is_declared_dead_and_restarted_by_its_nanny(tmp_path):
    options = ["--liveness-timeout", "3"]
    with LocalCluster(n_workers=2, threads_per_worker=1, worker_options=options,
                      worker_ttl=2.0) as cluster, Client(cluster.scheduler_address) as client:
        pids = set(worker_pids(client).values())
        start = time.monotonic()
        f = client.submit(block_loop_once, str(tmp_path / "flag"), 60, pure=False)
        # The blocked worker falls silent: the scheduler drops it, the task runs elsewhere.
        assert f.result(timeout=60) == "done"
        assert time.monotonic() - start < 30
        wait_until_blocking(lambda: len(client.nthreads()) == 2, timeout=30)
        wait_until_blocking(lambda: len(set(worker_pids(client).values()) - pids) == 1, timeout=30)


def kill_worker(client, address: str) -> None:
    """SIGKILL a worker and wait until the scheduler has seen it go, so that a later
    "all 3 workers are up" check means its replacement joined."""
    os.kill(client.scheduler_info()["workers"][address]["pid"], signal.SIGKILL)
    wait_until_blocking(lambda: address not in client.nthreads(), timeout=30)


def padded_step(x, delay=0.01):
    """``step``, with a result too large to travel with the scheduler's report
    (``scheduler.inline-result-bytes``), so the client must fetch it from its holder."""
    time.sleep(delay)
    return x + 1, b"\0" * (256 * 1024)


@pytest.mark.timeout(90)
def test_gather_waits_for_a_result_recomputed_after_its_holder_died(client):
    """The only holder of a finished key dies before the client fetches it: the
    scheduler recomputes the key and the gather simply waits for it."""
    holder = sorted(client.nthreads())[0]
    warm = client.submit(step, 0, delay=0, workers=[holder], pure=False)
    assert client.gather(warm) == 1  # the client now has a connection to the holder
    f = client.submit(padded_step, 1, delay=1.0, workers=[holder], allow_other_workers=True,
                      pure=False)
    wait([f], timeout=60)
    holders = client.who_has([f])[f.key]
    # Once an earlier test of this module has killed a worker, checkpoints are armed and
    # a 1 s task gets a second copy (``scheduler/checkpoints.py``), which may already be
    # in place: the holders all die, so that the key is recomputed all the same.
    assert holder in holders
    for address in holders:
        kill_worker(client, address)
    assert client.gather(f, timeout=60)[0] == 2
    assert f.result(timeout=60)[0] == 2
    wait_until_blocking(lambda: len(client.nthreads()) == 3, timeout=30)


@pytest.mark.timeout(90)
def test_gather_of_scattered_data_whose_holder_died_raises_data_lost(client):
    holder = sorted(client.nthreads())[0]
    [x] = client.scatter([41], workers=[holder])
    assert client.gather(x) == 41
    kill_worker(client, holder)
    with pytest.raises(DataLostError, match="lost"):
        client.gather(x, timeout=60)
    wait_until_blocking(lambda: len(client.nthreads()) == 3, timeout=30)
