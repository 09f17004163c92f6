"""Deployment: the seed's Pool/Cluster example, the CLI, and clean shutdowns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from corral import Client, Cluster, LocalCluster, Pool
from tests._helpers import free_ports, wait_until_blocking


def corral_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]


def test_seed_pool_and_cluster_example():
    center, w1, w2 = free_ports(3)
    c = Cluster(hosts=[f"127.0.0.1:{w1}", f"127.0.0.1:{w2}"], center=f"127.0.0.1:{center}")
    p = Pool(f"127.0.0.1:{center}")
    a, b, d = p.map(lambda x: x * 10, [1, 2, 3])
    assert (a.get(), b.get(), d.get()) == (10, 20, 30)
    assert p.apply(pow, (2, 10)).get() == 1024
    workers = p.client.nthreads()
    assert sorted(workers) == sorted([f"tcp://127.0.0.1:{w1}", f"tcp://127.0.0.1:{w2}"])
    p.close()
    c.close()
    assert not corral_children()


def test_local_cluster_leaves_no_orphans():
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster:
        pids = {w.pid for w in cluster.workers.values()}
        assert len(pids) == 2
        cluster.scale(3)
        assert len(cluster.workers) == 3
        cluster.scale(1)
        assert len(cluster.workers) == 1
        with Client(cluster.scheduler_address) as client:
            assert len(client.nthreads()) == 1
    assert not corral_children()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _start(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "corral.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs,
    )


def test_cli_scheduler_two_workers_and_a_client(tmp_path):
    (port,) = free_ports(1)
    scheduler_file = tmp_path / "scheduler.json"
    sched = _start(["scheduler", "--port", str(port), "--scheduler-file", str(scheduler_file)])
    workers = []
    try:
        def written() -> bool:
            assert sched.poll() is None, sched.stdout.read()
            return scheduler_file.exists()

        wait_until_blocking(written, 30, what="the scheduler to write its file")
        address, token = (json.loads(scheduler_file.read_text())[k] for k in ("address", "token"))
        assert address == f"tcp://127.0.0.1:{port}"
        assert oct(scheduler_file.stat().st_mode & 0o777) == "0o600"
        workers = [
            _start(["worker", address, "--nthreads", "1", "--name", "w0"]),
            _start(["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1"]),
        ]
        with Client(address) as client:
            wait_until_blocking(lambda: len(client.nthreads()) >= 2, 30, what="2 workers")
            assert client.submit(sum, [1, 2, 3]).result(timeout=10) == 6
            assert sorted(client.gather(client.map(abs, [-1, -2]))) == [1, 2]
        for w in workers:
            w.send_signal(signal.SIGTERM)
            assert w.wait(timeout=15) == 0, w.stdout.read()
        sched.send_signal(signal.SIGINT)
        assert sched.wait(timeout=15) == 0
        log = sched.stdout.read()
        assert not scheduler_file.exists()  # removed on a clean shutdown
        assert f"start workers with: corral worker {address}" in log
        assert token[:4] in log  # named,
        assert token not in log  # never printed in full
    finally:
        for proc in [sched, *workers]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def test_worker_exits_when_its_parent_dies():
    with LocalCluster(n_workers=0) as cluster:
        code = (
            "import os, subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-m', 'corral.cli', 'worker', "
            f"'{cluster.scheduler_address}', '--nthreads', '1'], "
            "env={**os.environ, 'CORRAL_PARENT_PID': str(os.getpid())})\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n"
        )
        env = {**os.environ, **cluster.security.environment()}  # the cluster's own token
        parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                  env=env)
        worker_pid = int(parent.stdout.readline())
        wait_until_blocking(lambda: cluster.scheduler.state.workers, 30, what="a worker")
        parent.kill()
        parent.wait()
        parent.stdout.close()
        wait_until_blocking(lambda: not psutil.pid_exists(worker_pid)
                            or psutil.Process(worker_pid).status() == "zombie",
                            15, what="the orphaned worker to stop")


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
async def test_ended_waits_for_a_child_to_exit_and_reaps_it(pidfd, monkeypatch):
    """The wait a cluster's close makes for each process: it returns as the child exits
    (through a pidfd, or by looking every 20 ms where there are none), reaped; and after
    ``timeout`` for one that runs on."""
    import asyncio

    from corral.deploy.process import ended

    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open")
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert await ended(quick, 30) is True
        assert quick.returncode == 0  # reaped
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await ended(slow, 0.2) is False
        assert loop.time() - start >= 0.2
        slow.kill()
        assert await ended(slow) is True
        assert slow.returncode == -signal.SIGKILL
    finally:
        slow.kill()
        slow.wait()
