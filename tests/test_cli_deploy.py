"""Deployment flags of ``corral worker`` and ``corral scheduler``: their meanings
(pure), help and versions (in-process), a worker's lifetime and a scheduler's idle
timeout (in-process servers), and one worker command on real processes."""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from corral import Client, LocalCluster, __version__
from corral.cli import main
from corral.deploy.options import (
    auto_nworkers,
    interface_address,
    parse_duration,
    parse_ports,
    writing_pid,
)
from corral.scheduler import Scheduler
from corral.worker import Worker
from tests._helpers import wait_until, wait_until_blocking


@pytest.fixture(autouse=True)
def _corral_log_level_kept():
    """The commands run in this process set the ``corral`` logger's level (``--log-level``):
    put it back, so later tests see the level they expect."""
    logger = logging.getLogger("corral")
    level = logger.level
    yield
    logger.setLevel(level)


def test_durations_ports_and_auto_nworkers():
    assert [parse_duration(t) for t in ("90", "90s", "5m", "1.5 hours", "2d")] == [
        90, 90, 300, 5400, 172800]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    assert parse_ports(None) == parse_ports("0") == [0]
    assert parse_ports("8000") == [8000]
    assert parse_ports("8000:8003") == [8000, 8001, 8002, 8003]
    for bad in ("8003:8000", "x", "70000"):
        with pytest.raises(ValueError, match="port"):
            parse_ports(bad)
    assert [auto_nworkers(n) for n in (1, 2, 4, 8, 12, 16, 7)] == [
        (1, 1), (2, 1), (4, 1), (4, 2), (4, 3), (4, 4), (7, 1)]


def test_interface_and_pid_file(tmp_path):
    assert interface_address("lo") == "127.0.0.1"
    with pytest.raises(ValueError, match=r"no network interface 'nope'; there are: .*lo"):
        interface_address("nope")
    path = tmp_path / "x.pid"
    with writing_pid(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


@pytest.mark.parametrize("command", [[], ["scheduler"], ["worker"], ["demo"], ["tls"],
                                     ["tls", "generate"]])
def test_every_command_has_short_help_and_a_version(command):
    runner = CliRunner()
    helped = runner.invoke(main, [*command, "-h"], prog_name="corral")
    assert helped.exit_code == 0
    assert "Usage: corral" in helped.output
    versioned = runner.invoke(main, [*command, "--version"], prog_name="corral")
    assert versioned.exit_code == 0
    assert __version__ in versioned.output


@pytest.mark.parametrize(("flags", "says"), [
    (["--nworkers", "2", "--worker-port", "8000"], "--worker-port with 2 workers needs a range"),
    (["--nworkers", "2", "--contact-address", "tcp://h:1"], "name one worker"),
    (["--nworkers", "lots"], "not a number of workers, nor 'auto'"),
    (["--interface", "nope"], "no network interface 'nope'"),
    (["--host", "0.0.0.0", "--interface", "lo"], "not both"),
    (["--lifetime", "soon"], "not a duration"),
])
def test_worker_flags_that_contradict_each_other_are_refused_in_one_line(flags, says):
    result = CliRunner().invoke(main, ["worker", "tcp://127.0.0.1:1", *flags])
    assert result.exit_code == 2
    assert says in result.output


async def test_a_scheduler_with_an_idle_timeout_closes_itself():
    sched = Scheduler(tick_interval=0.02, idle_timeout=0.2)
    await sched.listen()
    await wait_until(lambda: sched._closed.is_set(), 10, "the scheduler closing when idle")
    await sched.finished()


def test_a_worker_at_the_end_of_its_lifetime_retires_and_its_data_stays():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        data = client.scatter(list(range(3)), workers=list(client.nthreads()))
        mortal = Worker(cluster.scheduler_address, nthreads=1, name="mortal", lifetime=0.3,
                        security=cluster.security)
        client.core.runner.run(mortal.start())
        client.scatter([10, 11], workers=[mortal.address])
        wait_until_blocking(lambda: mortal.retired, 20, "the worker retiring")
        assert mortal.lifecycle.lifetime_over
        assert mortal.address not in client.nthreads()
        assert client.gather(data) == [0, 1, 2]


def _free_range(n: int) -> str:
    for _ in range(50):
        base = random.randrange(20000, 60000)
        try:
            held = []
            for port in range(base, base + n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return f"{base}:{base + n - 1}"
    raise RuntimeError("no free range of ports")


PRELOAD = '''
def corral_setup(worker):
    worker.preloaded = "yes"
'''


def test_worker_command_ports_preload_pid_file_and_lifetime_restart(tmp_path):
    with LocalCluster(n_workers=0, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        (tmp_path / "setup.py").write_text(PRELOAD)
        worker_range, nanny_range = _free_range(3), _free_range(3)
        pid_path = tmp_path / "worker.pid"
        env = {**os.environ, **cluster.security.environment()}
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.cli", "worker", cluster.scheduler_address,
             "--worker-port", worker_range, "--nanny-port", nanny_range,
             "--preload", str(tmp_path / "setup.py"), "--pid-file", str(pid_path),
             "--lifetime", "1.5s", "--lifetime-restart"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until_blocking(lambda: client.nthreads(), 30, "a worker")
            (first,) = client.nthreads()
            low, high = map(int, worker_range.split(":"))
            assert low <= int(first.rsplit(":", 1)[1]) <= high
            assert pid_path.read_text() == f"{proc.pid}\n"

            def preloaded():
                from corral.worker import get_worker

                return get_worker().preloaded

            assert client.run(preloaded) == {first: "yes"}

            def pids():
                return {w["pid"] for w in client.scheduler_info()["workers"].values()}

            before = pids()
            # Its lifetime over, it retires; the nanny starts a fresh one in its place.
            wait_until_blocking(lambda: pids() - before, 30,
                                "a fresh worker after the first one's lifetime")
            assert proc.poll() is None
        finally:
            proc.terminate()
            output = proc.communicate(timeout=30)[0]
        assert "lifetime is over" in output
        assert not pid_path.exists()
