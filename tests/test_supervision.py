"""Supervision: children die with their parents, workers outlast scheduler outages.

Real processes and real signals: a nanny SIGKILLed and never reaped (a zombie), a
program running an Executor killed the same way, ``corral worker`` pointed at a closed
port, a scheduler stopped and started again at the same address. The retry policy
itself is pure and tested without sockets.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import psutil
import pytest

from corral import Client, LocalCluster
from corral.deploy.process import GAVE_UP_STATUS
from corral.exceptions import ConnectTimeoutError
from corral.security import Security
from corral.utils import run_async
from corral.worker.reconnect import REPORT_EVERY, WINDOW_CAP, Retry, describe
from tests._helpers import wait_until_blocking

pytestmark = pytest.mark.usefixtures("no_leaks")

# -- the retry policy, pure ------------------------------------------------------------------


def test_retry_never_gives_up_without_a_death_timeout_and_reports_rarely():
    retry = Retry(None, now=0.0)
    now, reports = 0.0, 0
    while now < 7 * 24 * 3600:  # a week-long outage
        window = retry.window(now)
        assert window is not None
        assert 0 < window <= WINDOW_CAP
        now += window
        reports += retry.failed(now, "connection refused")
    assert reports <= 7 * 24 * 3600 / REPORT_EVERY + 1


def test_retry_reports_each_cause_at_once_then_at_most_once_a_minute():
    retry = Retry(None, now=0.0)
    assert retry.failed(1.0, "connection refused")
    assert not retry.failed(2.0, "connection refused")
    assert retry.failed(3.0, "no answer (timed out)")
    assert not retry.failed(4.0, "connection refused")  # flapping back: said recently
    assert not retry.failed(3.0 + REPORT_EVERY - 1, "no answer (timed out)")
    assert retry.failed(3.0 + REPORT_EVERY, "no answer (timed out)")


def test_retry_gives_up_once_the_death_timeout_has_passed():
    retry = Retry(2.0, now=100.0)
    assert retry.window(100.0) == 1.0
    retry.failed(101.0, "connection refused")
    assert retry.window(101.5) == pytest.approx(0.5)  # never past the deadline
    assert retry.window(102.0) is None


def test_describe_names_the_cause():
    refused = ConnectTimeoutError("timed out after 1s trying to connect to tcp://h:1")
    refused.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    assert describe(refused).startswith("connection refused")
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert describe(unknown) == "cannot resolve the host name (Name or service not known)"
    assert describe(TimeoutError()) == "no answer (timed out)"


def test_retrying_an_unknown_host_logs_no_asyncio_errors(caplog):
    """uvloop's create_connection, cancelled mid-lookup, logged the lookup's error as
    'Future exception was never retrieved' with a traceback: once per attempt."""
    from corral.comm import connect as transport_connect

    async def attempts() -> None:
        for _ in range(3):
            with pytest.raises(ConnectTimeoutError, match=r"no-such-host\.invalid"):
                await transport_connect("tcp://no-such-host.invalid:1", timeout=0.3)
        gc.collect()  # a leaked future reports when it is collected
        await asyncio.sleep(0.1)

    run_async(attempts())  # on uvloop, as corral's processes run
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


# -- helpers for real processes -------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Corral:
    """``corral ARGS`` as a child process whose stderr is collected line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "corral.cli", *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text))

    def wait_for(self, pattern: str, n: int = 1, timeout: float = 30.0) -> None:
        wait_until_blocking(lambda: self.count(pattern) >= n, timeout,
                            what=lambda: f"{n} x {pattern!r} in:\n{self.text}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:  # a failed test: take its children down too
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
            self.process.kill()
            self.process.wait()
        self._reader.join(10)
        assert self.process.stderr is not None
        self.process.stderr.close()


# -- items 11 and 16: a worker and its unreachable scheduler ---------------------------------


def test_worker_names_an_unreachable_scheduler_at_once_and_keeps_trying():
    address = f"tcp://127.0.0.1:{closed_port()}"
    worker = Corral("worker", address, "--nthreads", "1")  # under its nanny
    try:
        line = rf"cannot reach the scheduler at {address}: connection refused"
        worker.wait_for(line, timeout=30)
        assert worker.process.poll() is None  # still trying
        assert "Traceback" not in worker.text
        assert worker.stop() == 0
    finally:
        worker.close()
    assert "Traceback" not in worker.text
    assert worker.count("cannot reach the scheduler") <= 2  # said once, not a flood


def test_worker_gives_up_after_its_death_timeout_with_one_line():
    address = f"tcp://127.0.0.1:{closed_port()}"
    # A long liveness timeout: the nanny must see its worker exit at once all the same.
    worker = Corral("worker", address, "--nthreads", "1", "--death-timeout", "2",
                    "--liveness-timeout", "300")
    try:
        assert worker.process.wait(60) == GAVE_UP_STATUS
    finally:
        worker.close()
    errors = [line for line in worker.lines if " ERROR " in line]
    assert len(errors) == 1, worker.text
    assert f"giving up on the scheduler at {address}" in errors[0]
    assert "connection refused" in errors[0]
    assert "Traceback" not in worker.text


@pytest.mark.timeout(120)
def test_worker_waits_for_its_scheduler_and_rejoins_it_after_an_outage():
    port = closed_port()
    address = f"tcp://127.0.0.1:{port}"
    token = {"CORRAL_TOKEN": Security.generate().token}
    scheduler_args = ("scheduler", "--port", str(port), "--dashboard-address", "none")
    worker = Corral("worker", address, "--nthreads", "1", env=token)
    scheduler = None
    try:
        # Started before its scheduler: it says so and waits (its nanny lets it).
        worker.wait_for(f"cannot reach the scheduler at {address}")
        scheduler = Corral(*scheduler_args, env=token)
        security = Security(token=token["CORRAL_TOKEN"])
        with Client(address, security=security) as client:
            wait_until_blocking(lambda: len(client.nthreads()) == 1, timeout=30)
            (pid,) = client.run(os.getpid).values()
        assert scheduler.stop() == 0
        # The scheduler is gone; the worker keeps trying until a new one listens there.
        worker.wait_for(f"cannot reach the scheduler at {address}", n=2)
        scheduler = Corral(*scheduler_args, env=token)
        with Client(address, security=security) as client:
            wait_until_blocking(lambda: len(client.nthreads()) == 1, timeout=30)
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
            assert list(client.run(os.getpid).values()) == [pid]  # the same process
        assert worker.stop() == 0
    finally:
        worker.close()
        if scheduler is not None:
            scheduler.stop()
    assert "Traceback" not in worker.text


# -- item 10: children die with their parents, zombies or not --------------------------------

KEEP_UNREAPED = """
import os, subprocess, sys, time
child = subprocess.Popen({command!r}, env={{**os.environ, **{env!r}}})
print(child.pid, flush=True)
time.sleep(120)  # never waits: a killed child stays a zombie
"""


def test_worker_exits_when_its_nanny_is_killed_and_not_reaped():
    with LocalCluster(n_workers=0, dashboard_address=None) as cluster:
        command = [sys.executable, "-m", "corral.cli", "worker", cluster.scheduler_address,
                   "--nthreads", "1"]
        code = KEEP_UNREAPED.format(command=command, env=cluster.security.environment())
        keeper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert keeper.stdout is not None
            nanny = int(keeper.stdout.readline())
            wait_until_blocking(lambda: len(cluster.scheduler.state.workers) == 1, timeout=30)
            (worker,) = psutil.Process(nanny).children()
            os.kill(nanny, signal.SIGKILL)
            wait_until_blocking(lambda: gone(nanny), timeout=30)
            assert psutil.Process(nanny).status() == psutil.STATUS_ZOMBIE  # unreaped
            wait_until_blocking(lambda: gone(worker.pid), timeout=20,
                                what="the orphaned worker to go")
            wait_until_blocking(lambda: not cluster.scheduler.state.workers, timeout=30)
        finally:
            keeper.kill()
            keeper.wait()
            keeper.stdout.close()


LIFELINE_KEEPER = """
import os, subprocess, sys, time
from corral.deploy.lifeline import PARENT_PID_ENV, Lifeline
line = Lifeline(pdeathsig=False)
env = line.environment() if sys.argv[1] == "pipe" else {PARENT_PID_ENV: str(os.getpid())}
child = subprocess.Popen([sys.executable, "-c", sys.argv[2]], env={**os.environ, **env},
                         pass_fds=line.pass_fds if sys.argv[1] == "pipe" else ())
line.spawned()
print(child.pid, flush=True)
time.sleep(120)  # never waits
"""

WATCHER = """
import asyncio
from corral.deploy import lifeline
lifeline.inherit()
print("watching", flush=True)
asyncio.run(lifeline.parent_gone())
"""


@pytest.mark.parametrize("mechanism", ["pipe", "signal"])
def test_each_lifeline_mechanism_alone_ends_the_child_of_a_killed_unreaped_parent(mechanism):
    keeper = subprocess.Popen([sys.executable, "-c", LIFELINE_KEEPER, mechanism, WATCHER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert keeper.stdout is not None
        child = int(keeper.stdout.readline())
        assert keeper.stdout.readline() == "watching\n"  # the child shares our stdout pipe
        assert not gone(child)
        keeper.kill()  # a zombie until the end of the test
        wait_until_blocking(lambda: gone(child), timeout=15)
    finally:
        keeper.kill()
        keeper.wait()
        keeper.stdout.close()


EXECUTOR_PROGRAM = """
import os
from corral import Executor
ex = Executor(cluster_options=dict(n_workers=2, threads_per_worker=1, dashboard_address=None))
cluster = ex.client.cluster
workers = ex.client.run(os.getpid).values()
print(*[w.pid for w in cluster.workers.values()], *workers, flush=True)
import time; time.sleep(120)
"""


@pytest.mark.timeout(90)
def test_executor_workers_exit_when_their_program_is_killed_and_not_reaped():
    program = subprocess.Popen([sys.executable, "-c", EXECUTOR_PROGRAM],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert program.stdout is not None
        pids = [int(p) for p in program.stdout.readline().split()]
        assert len(pids) == 4  # two nannies, two workers
        program.kill()  # and not reaped until the end of the test: a zombie
        wait_until_blocking(lambda: gone(program.pid), timeout=30)
        wait_until_blocking(lambda: all(gone(p) for p in pids), timeout=20,
                            what=lambda: [p for p in pids if not gone(p)])
    finally:
        program.kill()
        program.wait()
        program.stdout.close()


# -- item 24: workers import what their parent imports ---------------------------------------


def plus_one(x: int) -> int:
    import supervision_helper  # a module only the parent's sys.path can find

    return supervision_helper.add(x, 1)


def test_local_cluster_started_beside_a_folder_named_corral(tmp_path, monkeypatch):
    (tmp_path / "corral").mkdir()
    (tmp_path / "corral" / "__init__.py").write_text("raise ImportError('the wrong corral')\n")
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "supervision_helper.py").write_text("def add(x, y):\n    return x + y\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(modules))
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as client:
        assert client.submit(plus_one, 41).result(timeout=30) == 42
        # What the parent handed down is not handed on to the tasks' own subprocesses.
        handed = ("CORRAL_SYS_PATH", "CORRAL_LIFELINE_FD", "CORRAL_PARENT_PID")
        assert list(client.run(lambda: [v for v in handed if v in os.environ]).values()) == [[]]



async def test_nanny_restarts_a_worker_that_had_come_up_at_once_however_often_it_dies(
        monkeypatch):
    """Chaos kills a worker every 1-2 s: no worker lived the 10 s that used to forgive
    earlier deaths, so restarts waited 0.2, 0.4 ... 10 s and the cluster sat empty. A
    worker that had come up is restarted at once; only one that dies before it comes
    up (a broken environment) is backed off, doubling."""
    from corral.nanny import Nanny

    nanny = Nanny("tcp://127.0.0.1:1", nthreads=1)
    MAX_BACKOFF = nanny.max_backoff
    slept: list[float] = []
    came_up = True

    async def no_kill(*args, **kwargs):
        pass

    async def start(*args, **kwargs):
        if came_up:
            nanny._started.set()
        else:
            nanny._started.clear()

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(nanny, "_kill", no_kill)
    monkeypatch.setattr(nanny, "_start_worker", start)
    monkeypatch.setattr("corral.nanny.asyncio.sleep", sleep)
    nanny._started.set()
    for _ in range(8):
        await nanny._replace("worker exited with status -9")
    assert slept == []
    assert nanny.restarts == 8
    came_up = False
    for _ in range(8):
        await nanny._replace("worker exited with status 1")
    assert slept[0] < 1
    assert slept[-1] == MAX_BACKOFF
    assert all(b in (2 * a, MAX_BACKOFF) for a, b in itertools.pairwise(slept))
