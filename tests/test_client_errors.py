"""The client says why: after close(), on a timeout, for another client's futures, and
when Ctrl-C interrupts a program waiting on it.

An in-process cluster (workers on a background loop of this process) serves the quick
tests; the Ctrl-C tests run real programs in child processes and interrupt them.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral import AsyncClient, Client, LocalCluster, as_completed, progress, wait
from corral.exceptions import ClientClosedError
from tests._helpers import wait_until_blocking

ROOT = Path(__file__).resolve().parent.parent
NEVER = {"resources": {"no-such-resource": 1}}  # no worker has it: the task stays pending


def inc(x: int) -> int:
    return x + 1


def total(*args: Any) -> int:
    return len(args)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as c:
        yield c


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.scheduler_address) as c:
        yield c


# -- item 20: a closed client says so, for every method ------------------------------------


def test_every_call_on_a_closed_client_or_its_futures_raises_client_closed(cluster):
    c = Client(cluster.scheduler_address)
    finished = c.submit(inc, 1)
    assert finished.result(timeout=30) == 2
    pending = c.submit(inc, 2, **NEVER)
    c.close()
    calls: dict[str, Callable[[], Any]] = {
        "submit": lambda: c.submit(inc, 3),
        "map": lambda: c.map(inc, [1, 2]),
        "gather": lambda: c.gather([finished]),
        "scatter": lambda: c.scatter([1, 2]),
        "cancel": lambda: c.cancel([pending]),
        "who_has": c.who_has,
        "nthreads": c.nthreads,
        "scheduler_info": c.scheduler_info,
        "run": lambda: c.run(os.getpid),
        "restart": c.restart,
        "get": lambda: c.get({"x": 1}, "x"),
        "result (finished)": finished.result,
        "result (pending at close)": pending.result,
        "exception": pending.exception,
        "traceback": pending.traceback,
        "Future.cancel": pending.cancel,
        "add_done_callback": lambda: finished.add_done_callback(print),
        "wait": lambda: wait([finished]),
        "as_completed": lambda: list(as_completed([finished])),
        "progress": lambda: progress([finished]),
    }
    wrong = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, call in calls.items():
            try:
                call()
                wrong[name] = "nothing raised"
            except ClientClosedError as e:
                if str(e) != f"this client ({c.id}) is closed":
                    wrong[name] = str(e)
            except Exception as e:
                wrong[name] = repr(e)
        gc.collect()  # coroutines made and dropped would warn now
    assert wrong == {}
    assert [str(w.message) for w in caught] == []
    c.close()  # a second close is harmless


async def test_async_client_after_close_and_a_wait_cut_short_by_close(cluster):
    client = await AsyncClient(cluster.scheduler_address)
    done = client.submit(inc, 1)
    assert await done == 2
    pending = client.submit(inc, 2, **NEVER)
    waiting = asyncio.ensure_future(client.gather([pending]))
    awaiting = asyncio.ensure_future(pending._result_async())
    await asyncio.sleep(0)  # both are waiting on the pending key now
    await client.close()
    for cut_short in (waiting, awaiting):  # not a CancelledError: the client went away
        with pytest.raises(ClientClosedError):
            await cut_short
    with pytest.raises(ClientClosedError):
        await done
    with pytest.raises(ClientClosedError):
        await client.gather([done])
    with pytest.raises(ClientClosedError):
        await client.who_has()
    with pytest.raises(ClientClosedError):
        await wait([done])
    with pytest.raises(ClientClosedError):
        client.submit(inc, 5)


# -- item 21: a timeout names the key and the time --------------------------------------------


def test_result_timeout_names_the_key_and_the_timeout(client):
    future = client.submit(inc, 1, **NEVER)
    with pytest.raises(TimeoutError, match=rf"^waiting for key '{future.key}' timed out after "
                                           r"0\.1 s$"):
        future.result(timeout=0.1)
    with pytest.raises(TimeoutError, match=rf"'{future.key}' timed out after 0\.2 s"):
        future.exception(timeout=0.2)
    with pytest.raises(TimeoutError, match=r"^gather\(\) timed out after 0\.1 s$"):
        client.gather([future], timeout=0.1)
    assert future.status == "pending"  # giving up waiting leaves the task alone
    assert client.submit(inc, 2).result(timeout=30) == 3


# -- item 23: another client's futures are refused at submit ----------------------------------


def test_futures_of_another_client_are_refused_at_submit(cluster, client):
    with Client(cluster.scheduler_address) as other:
        theirs = other.submit(inc, 10)
        assert theirs.result(timeout=30) == 11
        message = rf"future '{theirs.key}' belongs to another client \({other.id}\)"
        for call in (
            lambda: client.submit(inc, theirs),
            lambda: client.submit(total, 1, [2, {"nested": (theirs,)}]),
            lambda: client.submit(total, x=theirs),
            lambda: client.map(inc, [theirs]),
            lambda: client.gather([1, [theirs]]),
        ):
            with pytest.raises(ValueError, match=message):
                call()
        mine = client.submit(inc, 1)
        with pytest.raises(ValueError, match=message):  # refused before any task is sent
            client.map(total, [mine, theirs], [1, 2], pure=False)
        assert set(client._core._states) == {mine.key}
    with pytest.raises(ValueError, match=rf"'{theirs.key}' belongs to another closed client"):
        client.submit(inc, theirs)
    assert client.submit(inc, mine).result(timeout=30) == 3


# -- item 22: Ctrl-C closes the client cleanly ----------------------------------------------

PROGRAM = """
import os, sys, time
from corral import Client, LocalCluster

def inc(x):
    return x + 1

def block(flag):  # runs until the test creates ``flag``
    open(flag + ".started", "w").close()
    while not os.path.exists(flag):
        time.sleep(0.02)
    return flag

where, flag = sys.argv[1:]
if where == "own":  # the client starts a local cluster of its own
    client = Client(cluster_options={"n_workers": 1, "dashboard_address": None})
elif where == "made":  # the program makes one, and a client of it; neither in a with block
    cluster = LocalCluster(n_workers=1, dashboard_address=None)
    client = Client(cluster)
else:
    client = Client(where)
held = client.map(inc, range(6))
client.gather(held)  # results in memory, which a lost worker would take with it
client.gather([client.submit(block, flag)])
"""


def run_until_blocked(tmp_path: Path, where: str, env: dict[str, str]
                      ) -> tuple[subprocess.Popen[str], Path]:
    """Start PROGRAM in a session of its own (a terminal's Ctrl-C reaches its whole process
    group); once its task runs, return it and the flag that ends the task."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(PROGRAM))
    flag = tmp_path / "flag"
    proc = subprocess.Popen(
        [sys.executable, str(script), where, str(flag)], stderr=subprocess.PIPE, text=True,
        env=env, cwd=ROOT, start_new_session=True,
    )
    def started() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        return Path(f"{flag}.started").exists()

    # A loaded machine can take long to start a cluster.
    wait_until_blocking(started, 120, what="the task to start")
    return proc, flag


def assert_only_the_interrupt(stderr: str) -> None:
    """A traceback that ends in KeyboardInterrupt, and no other line."""
    lines = stderr.rstrip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", stderr
    assert lines[-1] == "KeyboardInterrupt", stderr
    assert all(line.startswith("  ") for line in lines[1:-1]), stderr


@pytest.mark.timeout(180)
def test_ctrl_c_with_a_remote_scheduler_releases_the_clients_keys_at_once(tmp_path):
    grace = 600  # far beyond the wait below: only a clean close can release the keys
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None, client_grace=grace) as cluster, \
            Client(cluster.scheduler_address) as observer:
        env = {**os.environ, **cluster.security.environment()}
        proc, flag = run_until_blocked(tmp_path, cluster.scheduler_address, env)
        try:
            assert observer.scheduler_info()["tasks"].get("memory") == 6
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
            assert_only_the_interrupt(stderr)
            wait_until_blocking(lambda: not observer.scheduler_info()["tasks"], 30,
                                what=observer.scheduler_info)
        finally:
            flag.touch()
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("cluster", ["own", "made"])
def test_ctrl_c_in_a_terminal_closes_a_client_and_its_local_cluster_cleanly(tmp_path, cluster):
    proc, flag = run_until_blocked(tmp_path, cluster, dict(os.environ))
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # the nanny and its worker
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: to the whole foreground group
        _, stderr = proc.communicate(timeout=60)
        assert_only_the_interrupt(stderr)  # no "lost the last copy", no "Task was destroyed"
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive
    finally:
        flag.touch()
        proc.kill()
        proc.communicate()


@pytest.mark.timeout(180)
def test_ctrl_c_while_the_local_cluster_starts_leaves_no_process_behind(tmp_path):
    script = tmp_path / "starting.py"
    script.write_text("from corral import Client\n"
                      "Client(cluster_options={'n_workers': 2, 'dashboard_address': None})\n"
                      "import time; time.sleep(600)\n")  # started already: Ctrl-C lands here
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def launched() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            return len(psutil.Process(proc.pid).children(recursive=True)) >= 2

        # Both nannies launched, neither up yet: the cluster is starting.
        wait_until_blocking(launched, 120, what="the worker processes to start")
        children = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)  # not held open by orphaned children
        assert_only_the_interrupt(stderr)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive
    finally:
        proc.kill()
        proc.communicate()


def test_many_tasks_failing_at_once_make_one_log_line_on_the_scheduler(caplog):
    """A shuffle whose 150 unpack tasks fail together said so in 150 lines."""
    from corral.scheduler import events as ev
    from corral.scheduler.server import Scheduler

    scheduler = Scheduler()
    notices = [ev.Notice(stimulus_id="s", event="task-erred", key=("unpack", i),
                         detail="ShuffleFailed: owner gone") for i in range(150)]
    scheduler.state.handle = lambda *stimuli: notices  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="corral.scheduler"):
        scheduler.handle()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == ("task-erred ('unpack', 0), ('unpack', 1), ('unpack', 2), ('unpack', 3), "
                    "('unpack', 4) and 145 more: ShuffleFailed: owner gone")
