"""Work larger than memory, on real worker processes: spilling, pausing, failures."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

import numpy as np
import psutil
import pytest

import corral
from corral import Client, LocalCluster, get_worker

from ._helpers import wait_until_blocking

MiB = 2**20
LIMIT = 300 * MiB
CHUNK = 20 * MiB


N = CHUNK // 8
K = 0x9E3779B97F4A7C15  # a multiplicative hash: values that lz4 cannot shrink


def chunk(i: int) -> np.ndarray:
    return np.arange(N, dtype=np.uint64) * np.uint64(K) + np.uint64(i)


def total(x: np.ndarray) -> int:
    return int(x.sum())  # modulo 2**64


def expected_total(i: int) -> int:
    return (K * (N * (N - 1) // 2) + N * i) % 2**64


class PeakRSS:
    """Samples the RSS of some processes on a thread; ``peak[pid]`` is the highest seen."""

    def __init__(self, pids) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            for p in self.procs:
                with contextlib.suppress(psutil.Error):
                    self.peak[p.pid] = max(self.peak[p.pid], p.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=LIMIT,
                      dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with Client(cluster.scheduler_address) as client:
        yield client


def worker_pids(client) -> dict[str, int]:
    return {a: w["pid"] for a, w in client.scheduler_info()["workers"].items()}


def memory(client):
    return {a: w["memory"] for a, w in client.scheduler_info()["workers"].items()}



@pytest.mark.timeout(90)
def test_four_times_the_clusters_memory_persists_and_reduces_exactly(client):
    pids = worker_pids(client)
    n = 4 * 2 * LIMIT // CHUNK  # 2.4 GB through two workers limited to 300 MiB each
    with PeakRSS(pids.values()) as rss:
        data = client.map(chunk, range(n))
        sums = client.map(total, data)
        assert client.gather(sums) == [expected_total(i) for i in range(n)]
    assert worker_pids(client) == pids  # no worker restarted
    for pid, peak in rss.peak.items():
        assert peak <= 1.1 * LIMIT, (pid, peak / MiB)
    spilled = [m["spilled"] for m in memory(client).values()]
    assert sum(spilled) > 2 * LIMIT  # most of it lives on disk
    del data, sums


def ballast(mib: int) -> int:
    """Memory the worker does not manage (a module global), as a leak would be."""
    import corral

    corral._ballast = bytearray(mib * MiB)  # type: ignore[attr-defined]
    for i in range(0, len(corral._ballast), 4096):  # type: ignore[attr-defined]
        corral._ballast[i] = 1  # type: ignore[attr-defined]
    return mib


def drop_ballast() -> None:
    import corral

    corral._ballast = None  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_a_paused_worker_serves_its_data_and_resumes(client):
    a, b = sorted(worker_pids(client))
    x = client.submit(chunk, 7, workers=[a], pure=False)
    assert client.submit(total, x, workers=[a]).result(timeout=30) == expected_total(7)
    client.run(ballast, 200, workers=[a])  # over 0.8 of 300 MiB: paused, not restarted
    wait_until_blocking(lambda: client.scheduler_info()["workers"][a]["paused"],
                        timeout=20)
    later = client.submit(total, x, workers=[a], pure=False)  # waits on the paused worker
    assert client.submit(total, x, workers=[b], pure=False).result(timeout=30) \
        == expected_total(7)  # a peer fetched from it
    assert client.gather(x)[0] == 7  # and so did the client
    assert not later.done()
    client.run(drop_ballast, workers=[a])
    assert later.result(timeout=30) == expected_total(7)  # resumed
    assert not client.scheduler_info()["workers"][a]["paused"]


class Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.payload = np.ones(CHUNK // 8)


def unpicklable() -> Unpicklable:
    return Unpicklable()


def noise(i: int) -> np.ndarray:
    return np.random.default_rng(i).random(10 * MiB // 8)  # lz4 cannot shrink it


def sealed_alive() -> int:
    from corral.comm import segments

    return len(segments._sealed)


@pytest.mark.timeout(90)
@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs")
@pytest.mark.parametrize("placed", [False, "8MiB"], ids=["in-process", "placed"])
def test_unpicklable_values_and_a_full_disk_do_not_crash_the_worker(tiny_disk, placed):
    # Results placed in shared memory leave the worker's RSS until read: its memory watch
    # must count them (corral.worker.process_memory), or it never pauses here.
    with corral.config.set({"comm.shared-memory.place-results": placed}), \
            LocalCluster(n_workers=1, threads_per_worker=1, memory_limit=300 * MiB,
                         local_directory=tiny_disk, dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as client:
        (address,) = pid = worker_pids(client)
        odd = client.submit(unpicklable, pure=False)
        data = client.map(noise, range(40))
        wait_until_blocking(
            lambda: client.scheduler_info()["workers"][address]["paused"], timeout=30)
        assert (client.run(sealed_alive)[address] > 0) == bool(placed)
        assert worker_pids(client) == pid  # alive, not restarted
        assert data[0].result(timeout=10).shape == (10 * MiB // 8,)  # still serves
        assert not all(f.done() for f in data)  # 400 MiB cannot fit: paused, not killed
        first = data[0]
        del data, first
        wait_until_blocking(
            lambda: not client.scheduler_info()["workers"][address]["paused"],
            timeout=30)
        assert client.submit(total, np.ones(4)).result(timeout=30) == 4
        assert odd.status == "finished"
        kept = client.run(lambda: sorted(map(str, get_worker().data.unspillable)))
        assert kept == {address: [odd.key]}  # it could not be spilled, and stayed
        assert worker_pids(client) == pid
        assert os.listdir(tiny_disk)  # its spill directory lived there


def test_a_memory_limit_too_small_is_refused_with_the_reason():
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli", "worker", "tcp://127.0.0.1:1", "--memory-limit",
         "20MB"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "too small to start a worker" in done.stderr
    assert "Traceback" not in done.stderr
