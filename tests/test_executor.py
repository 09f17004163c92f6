"""``corral.Executor`` keeps the promises the standard library makes for executors.

Most tests share one cluster of in-process workers: tasks run in this process, so a
task can wait on a ``threading.Event`` the test opens (a "gate") to stay pending for as
long as the test needs. One test runs the executor against real worker processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref

import pytest

from corral import Client, Executor, LocalCluster
from corral.exceptions import CorralError
from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState
from tests._helpers import wait_until_blocking

pytestmark = pytest.mark.usefixtures("no_leaks")

GATES: dict[str, threading.Event] = {}
RAN: list[str] = []


def inc(x):
    return x + 1


def divide(x, y):
    return x / y


def held(gate, value):
    """``value``, once the test opens ``gate`` (at once if ``gate`` is None)."""
    if gate is not None and not GATES[gate].wait(30):
        raise TimeoutError(f"gate {gate} never opened")
    return value


def record(name):
    RAN.append(name)
    return name


def echo_kwargs(**kwargs):
    return kwargs


def capture(*args, **kwargs):
    return args, kwargs


class Box:
    """A result that a weak reference can watch."""

    def __init__(self, value):
        self.value = value


def is_closed(client):
    try:
        client.submit(inc, 0)
    except CorralError:
        return True
    return False


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as c:
        yield c


@pytest.fixture
def executor(cluster):
    ex = Executor(cluster)
    yield ex
    ex.shutdown()


@pytest.fixture
def gate(executor):
    """A gate opened when the test ends (before the executor shuts down and waits)."""
    name = uuid.uuid4().hex
    GATES[name] = threading.Event()
    yield name
    GATES[name].set()


def test_submit_returns_standard_futures(executor):
    future = executor.submit(inc, 1)
    assert isinstance(future, cf.Future)
    assert future.result(timeout=10) == 2
    failed = executor.submit(divide, 1, 0)
    assert isinstance(failed.exception(timeout=10), ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        failed.result()


def test_keywords_go_to_the_function_even_if_submit_knows_them(executor):
    future = executor.submit(echo_kwargs, key="k", workers=3, pure=True, x=1)
    assert future.result(timeout=10) == {"key": "k", "workers": 3, "pure": True, "x": 1}


def test_map_yields_results_in_order(executor, gate):
    assert list(executor.map(divide, [6, 8, 10], [1, 2, 5])) == [6.0, 4.0, 2.0]
    # The first call finishes last: the order is the inputs', not the finishing order.
    first_last = executor.map(held, [gate, None], ["a", "b"])
    assert executor.submit(inc, 1).result(timeout=10) == 2
    GATES[gate].set()
    assert list(first_last) == ["a", "b"]
    assert list(executor.map(divide, range(5), [1, 1])) == [0, 1]  # the shortest wins


def test_map_reraises_exceptions_on_iteration(executor):
    results = executor.map(divide, [1, 2, 3], [1, 0, 1])  # the call itself does not raise
    assert next(results) == 1.0
    with pytest.raises(ZeroDivisionError):
        next(results)
    with pytest.raises(StopIteration):  # the iterator is finished, the rest cancelled
        next(results)


def test_map_is_lazy_and_times_out_from_the_call(executor, gate):
    start = time.monotonic()
    results = executor.map(held, [gate, gate], [1, 2], timeout=1.0)
    assert time.monotonic() - start < 1.0  # submitting does not wait for results
    time.sleep(1.0)  # the timeout runs from the call to map, not from next()
    before = time.monotonic()
    with pytest.raises(TimeoutError):
        next(results)
    assert time.monotonic() - before < 0.5
    with pytest.raises(StopIteration):
        next(results)


def test_map_timeout_after_some_results(executor, gate):
    results = executor.map(divide, [1, 2], [1, 1], timeout=30)
    assert list(results) == [1.0, 2.0]
    partial = executor.map(held, [None, gate], [0, 1], timeout=2)
    assert next(partial) == 0
    with pytest.raises(cf.TimeoutError):
        next(partial)


@pytest.mark.parametrize("chunksize", [1, 3, 100])
def test_map_chunksize(executor, chunksize):
    assert list(executor.map(divide, range(10), [2] * 10, chunksize=chunksize)) == [
        x / 2 for x in range(10)
    ]
    with pytest.raises(ZeroDivisionError):
        list(executor.map(divide, [1, 2, 3], [1, 0, 1], chunksize=chunksize))


def test_chunksize_must_be_positive(executor):
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(inc, [1], chunksize=0)


def test_shutdown_waits_for_pending_work(executor, gate):
    futures = [executor.submit(held, gate, i) for i in range(3)]
    shutting = threading.Thread(target=executor.shutdown)
    shutting.start()
    shutting.join(0.3)
    assert shutting.is_alive()  # still waiting for the gated calls
    assert not any(f.done() for f in futures)
    GATES[gate].set()
    shutting.join(10)
    assert not shutting.is_alive()
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2]


def test_shutdown_cancel_futures(executor, gate):
    running = [executor.submit(held, gate, i) for i in range(2)]  # both workers busy
    queued = [executor.submit(held, gate, i) for i in range(2, 4)]
    wait_until_blocking(lambda: all(f.running() for f in running))

    def open_gate_once_cancelled():
        wait_until_blocking(lambda: all(f.cancelled() for f in queued))
        GATES[gate].set()

    opener = threading.Thread(target=open_gate_once_cancelled)
    opener.start()
    executor.shutdown(wait=True, cancel_futures=True)  # waits for the running calls
    opener.join()
    assert [f.result(timeout=0) for f in running] == [0, 1]
    with pytest.raises(cf.CancelledError):
        queued[0].result()


def test_submit_after_shutdown_raises(executor):
    executor.shutdown()
    executor.shutdown()  # safe to call again
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(inc, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.map(inc, [1])


def test_context_manager_shuts_down_and_closes_its_client(cluster):
    with Executor(cluster) as ex:
        future = ex.submit(inc, 1)
    assert future.done()
    assert future.result() == 2
    with pytest.raises(RuntimeError):
        ex.submit(inc, 1)
    assert is_closed(ex.client)  # the client the executor started


def test_a_given_client_stays_open(cluster):
    with Client(cluster) as client:
        with Executor(client) as ex:
            assert ex.submit(inc, 1).result(timeout=10) == 2
        assert client.submit(inc, 2).result(timeout=10) == 3
        with pytest.raises(TypeError):
            Executor(client, timeout=3)


def test_standard_wait_and_as_completed(executor, gate):
    fast = [executor.submit(inc, i) for i in range(5)]
    slow = executor.submit(held, gate, "slow")
    assert not cf.wait(fast, timeout=10).not_done
    done, not_done = cf.wait([*fast, slow], timeout=0.2)  # returns at the timeout
    assert done == set(fast)
    assert not_done == {slow}
    done, not_done = cf.wait([*fast, slow], return_when=cf.FIRST_COMPLETED)
    assert done
    failed = executor.submit(divide, 1, 0)
    done, _ = cf.wait([slow, failed], return_when=cf.FIRST_EXCEPTION, timeout=10)
    assert done == {failed}
    GATES[gate].set()
    finished = list(cf.as_completed([*fast, slow], timeout=10))
    assert set(finished) == {*fast, slow}
    assert sorted(f.result() for f in fast) == [1, 2, 3, 4, 5]


def test_done_callbacks_fire_off_the_client_loop(executor):
    fired = threading.Event()
    seen = []

    def callback(future):
        follow_up = executor.submit(inc, 10)  # submitting from a callback is fine
        seen.append((future, future.result(), threading.current_thread().name, follow_up))
        fired.set()

    future = executor.submit(inc, 1)
    future.add_done_callback(callback)
    assert fired.wait(10)
    [(called_with, result, thread, follow_up)] = seen
    assert (called_with, result) == (future, 2)
    assert thread != "corral-client"  # not the client's event loop
    assert follow_up.result(timeout=10) == 11
    late = []
    future.add_done_callback(late.append)  # on a done future: called at once
    assert late == [future]


def test_cancel_a_pending_future_cancels_its_task(executor, gate):
    RAN.clear()
    blockers = [executor.submit(held, gate, i) for i in range(2)]  # both workers busy
    queued = executor.submit(record, "cancelled")
    assert queued.cancel()
    assert queued.cancelled()
    kept = executor.submit(record, "kept")
    GATES[gate].set()
    assert kept.result(timeout=10) == "kept"
    assert [b.result(timeout=10) for b in blockers] == [0, 1]
    workers = executor.client.scheduler_info
    wait_until_blocking(lambda: all(w["processing"] == 0 for w in workers()["workers"].values()))
    assert RAN == ["kept"]


def test_no_argument_starts_and_stops_a_local_cluster():
    options = {"n_workers": 1, "processes": False, "dashboard_address": None}
    with Executor(cluster_options=options) as ex:
        assert list(ex.map(inc, [1, 2])) == [2, 3]
        cluster = ex.client.cluster
    assert cluster.status.value == "closed"


def test_shutdown_without_wait_lets_pending_work_finish(cluster):
    ex = Executor(cluster)
    name = uuid.uuid4().hex
    GATES[name] = threading.Event()
    future = ex.submit(held, name, "done")
    ex.shutdown(wait=False)
    assert not future.done()
    GATES[name].set()
    assert future.result(timeout=10) == "done"
    wait_until_blocking(lambda: is_closed(ex.client))  # its client closes after the last call


def test_on_worker_processes():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        with Executor(c.scheduler_address, security=c.security) as ex:
            pids = {f.result(timeout=30) for f in [ex.submit(os.getpid) for _ in range(4)]}
            assert os.getpid() not in pids
            assert list(ex.map(divide, range(20), [4] * 20, chunksize=6)) == [
                x / 4 for x in range(20)
            ]
            with pytest.raises(ZeroDivisionError):
                ex.submit(divide, 1, 0).result(timeout=30)


# -- the keywords a call receives ------------------------------------------------------------


def test_keywords_named_like_submits_own_parameters_reach_the_function(executor):
    future = executor.submit(capture, 1, self=2, fn=3)
    assert future.result(timeout=10) == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        executor.submit(fn=capture, arg=1)  # the function itself is positional only


# -- map lets go of what it yielded ------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_frees_each_result_the_caller_drops(executor, chunksize):
    seen = 0
    for box in executor.map(Box, range(10), chunksize=chunksize):
        assert box.value == seen
        ref = weakref.ref(box)
        del box
        assert ref() is None  # freed before the next result is asked for
        seen += 1
    assert seen == 10


# -- running calls: reported, and not cancellable ----------------------------------------------


def test_a_started_call_is_running_and_cannot_be_cancelled(executor, gate):
    RAN.clear()
    running = executor.submit(held, gate, "ran")
    wait_until_blocking(running.running)
    assert not running.cancel()
    assert running.running()
    assert not running.cancelled()
    GATES[gate].set()
    assert running.result(timeout=10) == "ran"
    assert not running.running()


def test_shutdown_cancels_only_the_calls_not_started(cluster, executor, gate):
    RAN.clear()
    started = [executor.submit(held, gate, i) for i in range(2)]  # both workers busy
    queued = [executor.submit(record, f"queued-{i}") for i in range(4)]
    wait_until_blocking(lambda: all(f.running() for f in started))
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert not any(f.done() for f in started)
    with Client(cluster) as client:  # the executor's own client closes when it is idle
        def processing():
            return [w["processing"] for w in client.scheduler_info()["workers"].values()]

        assert processing() == [1, 1]  # the workers gave the cancelled calls back
        GATES[gate].set()
        assert [f.result(timeout=10) for f in started] == [0, 1]
        wait_until_blocking(lambda: processing() == [0, 0])
    assert RAN == []


def test_the_scheduler_reports_starts_only_to_clients_that_ask():
    state = SchedulerState()
    state.handle(ev.AddWorker(stimulus_id="add", address="tcp://w:1", nthreads=2))
    tasks = tuple(ev.TaskSpec(key=k, run_spec=b"spec") for k in ("watched", "plain"))
    state.handle(
        ev.UpdateGraph(stimulus_id="g1", client="ex", tasks=tasks[:1], wanted=("watched",),
                       report_start=True),
        ev.UpdateGraph(stimulus_id="g2", client="c", tasks=tasks[1:], wanted=("plain",)),
    )
    actions = state.handle(*(ev.TaskStarted(stimulus_id=f"s-{k}", worker="tcp://w:1", key=k)
                             for k in ("watched", "plain")))
    assert actions == [ev.ReportTaskStarted(stimulus_id="s-watched", client="ex", key="watched")]
    # A task asked about once it has started is reported at once.
    actions = state.handle(ev.UpdateGraph(stimulus_id="g3", client="c", tasks=(),
                                          wanted=("plain",), report_start=True))
    assert actions == [ev.ReportTaskStarted(stimulus_id="g3", client="c", key="plain")]
    state.handle(ev.TaskFinished(stimulus_id="f", worker="tcp://w:1", key="watched", nbytes=1))
    assert not state.start_watchers
    state.validate()


def test_the_workers_decide_which_calls_a_shutdown_cancels():
    state = SchedulerState()
    state.handle(ev.AddWorker(stimulus_id="add", address="tcp://w:1", nthreads=1))
    tasks = tuple(ev.TaskSpec(key=k, run_spec=b"spec") for k in ("a", "b", "c"))
    state.handle(ev.UpdateGraph(stimulus_id="g", client="ex", tasks=tasks, wanted=("a", "b", "c"),
                                report_start=True),
                 ev.TaskStarted(stimulus_id="s", worker="tcp://w:1", key="a"))
    actions = state.handle(ev.CancelKeys(stimulus_id="x", client="ex", keys=("a", "b", "c"),
                                         unstarted_only=True))
    # "a" has started: it runs on. "b" and "c" are on the worker: it decides.
    assert actions == [ev.StealRequest(stimulus_id="x", worker="tcp://w:1", key=k)
                       for k in ("b", "c")]
    actions = state.handle(
        ev.StealResponse(stimulus_id="r", worker="tcp://w:1", key="b", released=True),
        ev.StealResponse(stimulus_id="r", worker="tcp://w:1", key="c", released=False),
    )
    assert actions == [ev.ReportCancelled(stimulus_id="r", client="ex", key="b")]
    assert (state.task_state("a"), state.task_state("b"), state.task_state("c")) == (
        "processing", None, "processing")  # "c" had started (its report is on its way)
    assert not state.cancel_requests
    state.validate()


# -- the end of the program --------------------------------------------------------------------

_PROGRAM = textwrap.dedent("""
    import sys, time
    from corral import Executor

    def write(path):
        time.sleep(0.3)
        with open(path, "w") as f:
            f.write("done")

    if __name__ == "__main__":
        out, how = sys.argv[1], sys.argv[2]
        ex = Executor(cluster_options={"n_workers": 1, "threads_per_worker": 2,
                                       "processes": False, "dashboard_address": None})
        for i in range(6):
            ex.submit(write, f"{out}/{i}")
        if how == "shutdown-nowait":
            ex.shutdown(wait=False)
""")


def test_pending_calls_finish_before_the_interpreter_exits(tmp_path):
    """Like the standard pools: with ``shutdown(wait=False)`` or no shutdown at all."""
    script = tmp_path / "program.py"
    script.write_text(_PROGRAM)
    runs = {}
    for how in ("shutdown-nowait", "no-shutdown"):
        (tmp_path / how).mkdir()
        runs[how] = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / how), how],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    errors = {how: process.communicate(timeout=50)[1] for how, process in runs.items()}
    for how, process in runs.items():
        assert process.returncode == 0, errors[how]
        assert "Traceback" not in errors[how], errors[how]
        assert sorted(p.name for p in (tmp_path / how).iterdir()) == [str(i) for i in range(6)]
