"""Tasks that launch tasks: ``secede``/``rejoin`` in both state machines (pure, exact
action lists), and recursive launching on one-thread workers (real processes)."""

from __future__ import annotations

import gc
import os
import time

import pytest

import corral
from corral import Client, Future, LocalCluster
from corral import messages as msgs
from corral.scheduler import events as sev
from corral.scheduler.state import SchedulerState
from corral.worker import events as ev
from corral.worker.state import WS, WorkerState
from tests._helpers import wait_until_blocking
from tests.test_worker_state import started as start

ME, A, B = "tcp://me:1", "tcp://a:1", "tcp://b:1"


def compute(key, priority=(0,)):
    return ev.ComputeTask(stimulus_id=f"c-{key}", key=key, run_spec=b"", who_has={},
                          nbytes={}, priority=priority)


def tell(stimulus_id, kind, **fields):
    return ev.SendToScheduler(stimulus_id=stimulus_id, msg=kind(stimulus_id=stimulus_id, **fields))


def secede(key):
    return ev.Secede(stimulus_id=f"secede-{key}", key=key)


def rejoin(key):
    return ev.Rejoin(stimulus_id=f"rejoin-{key}", key=key)


def success(key):
    return ev.ExecuteSuccess(stimulus_id=f"s-{key}", key=key, nbytes=8, typename="int",
                             start=1.0, stop=2.0)


@pytest.fixture
def ws():
    state = WorkerState(ME, nthreads=1)
    yield state
    state.validate()


# -- the worker -----------------------------------------------------------------------------


def test_a_seceded_task_frees_its_slot_for_the_next_ready_task(ws):
    assert ws.handle(compute("parent")) == start("c-parent", "parent")
    assert ws.handle(compute("child", priority=(1,))) == []
    assert ws.handle(secede("parent")) == [
        tell("secede-parent", msgs.TaskSeceded, key="parent"),
        *start("secede-parent", "child"),
    ]
    assert ws.tasks["parent"].state == WS.LONG_RUNNING
    assert ws.executing == {"child"}
    assert ws.long_running == {"parent"}
    assert ws.handle(secede("parent")) == []  # twice is once


def test_rejoin_waits_for_a_free_slot_and_goes_before_ready_tasks(ws):
    ws.handle(compute("parent"), compute("child", priority=(1,)))
    ws.handle(secede("parent"), compute("other", priority=(2,)))
    assert ws.handle(rejoin("parent")) == []  # the child holds the only slot
    assert ws.handle(success("child")) == [
        tell("s-child", msgs.TaskFinished, key="child", nbytes=8, typename="int", start=1.0,
             stop=2.0),
        tell("s-child", msgs.TaskRejoined, key="parent"),
        ev.Resume(stimulus_id="s-child", key="parent"),
    ]
    assert ws.tasks["parent"].state == WS.EXECUTING
    assert ws.tasks["other"].state == WS.READY
    out = ws.handle(success("parent"))
    assert out[-2:] == start("s-parent", "other")


def test_a_rejoin_with_a_free_slot_resumes_at_once(ws):
    ws.handle(compute("parent"))
    ws.handle(secede("parent"))
    assert ws.handle(rejoin("parent")) == [
        tell("rejoin-parent", msgs.TaskRejoined, key="parent"),
        ev.Resume(stimulus_id="rejoin-parent", key="parent"),
    ]


def test_rejoin_without_secede_or_after_a_reset_never_leaves_the_thread_waiting(ws):
    assert ws.handle(rejoin("nobody")) == [ev.Resume(stimulus_id="rejoin-nobody", key="nobody")]
    ws.handle(compute("x"))
    assert ws.handle(rejoin("x")) == [ev.Resume(stimulus_id="rejoin-x", key="x")]


def test_a_seceded_task_freed_is_cancelled_and_wanted_again_stays_seceded(ws):
    ws.handle(compute("parent"))
    ws.handle(secede("parent"))
    assert ws.handle(ev.FreeKeys(stimulus_id="free", keys=("parent",))) == []
    assert ws.tasks["parent"].state == WS.CANCELLED
    assert ws.handle(compute("parent")) == [tell("c-parent", msgs.TaskSeceded, key="parent")]
    assert ws.tasks["parent"].state == WS.LONG_RUNNING
    ws.handle(ev.FreeKeys(stimulus_id="free", keys=("parent",)))
    # cancelled: it still gets its slot back to finish, but the scheduler hears nothing
    assert ws.handle(rejoin("parent")) == [ev.Resume(stimulus_id="rejoin-parent", key="parent")]
    assert ws.handle(success("parent")) == [ev.ReleaseData(stimulus_id="s-parent",
                                                           keys=("parent",))]
    assert "parent" not in ws.tasks


def test_a_seceded_task_that_finishes_without_rejoining_frees_nothing_twice(ws):
    ws.handle(compute("parent"), compute("child", priority=(1,)))
    ws.handle(secede("parent"))
    out = ws.handle(success("parent"))
    assert out == [tell("s-parent", msgs.TaskFinished, key="parent", nbytes=8, typename="int",
                        start=1.0, stop=2.0)]
    assert ws.executing == {"child"}
    assert not ws.long_running


# -- the scheduler --------------------------------------------------------------------------


def test_the_scheduler_does_not_count_a_seceded_task_as_load():
    state = SchedulerState(default_duration=1.0)
    state.handle(sev.AddWorker(stimulus_id="add", address=A, nthreads=1),
                 sev.AddWorker(stimulus_id="add", address=B, nthreads=1))
    spec = sev.TaskSpec(key="parent", run_spec=b"p", name="parent")
    out = state.handle(sev.UpdateGraph(stimulus_id="g1", client="c", tasks=(spec,),
                                       wanted=("parent",)))
    (where,) = [a.worker for a in out if isinstance(a, sev.ComputeTask)]
    other = B if where == A else A
    ws = state.workers[where]
    assert ws.occupancy == 1.0
    state.handle(sev.TaskStarted(stimulus_id="st", worker=where, key="parent"),
                 sev.TaskSeceded(stimulus_id="sec", worker=where, key="parent"))
    assert ws.occupancy == 0.0
    assert ws.queued() == 0
    state.validate()
    # a child goes to the parent's worker now (ties broken by address: make it the loser)
    children = tuple(sev.TaskSpec(key=f"child-{i}", run_spec=b"c", name="child")
                     for i in range(2))
    out = state.handle(sev.UpdateGraph(stimulus_id="g2", client="c", tasks=children,
                                       wanted=tuple(t.key for t in children)))
    assert sorted(a.worker for a in out if isinstance(a, sev.ComputeTask)) == sorted([A, B])
    assert ws.queued() == 1
    assert state.workers[other].queued() == 1
    # idle workers steal nothing from a worker whose only extra task is seceded
    assert state.handle(sev.Tick(stimulus_id="t", now=1.0)) == []
    state.handle(sev.TaskRejoined(stimulus_id="rej", worker=where, key="parent"))
    assert ws.occupancy == 2.0
    assert ws.queued() == 2
    state.validate()
    state.handle(sev.TaskFinished(stimulus_id="done", worker=where, key="parent", nbytes=8))
    assert ws.occupancy == 1.0
    assert not ws.long_running
    state.validate()


def test_a_seceded_task_on_a_worker_that_dies_is_recomputed_elsewhere():
    state = SchedulerState(default_duration=1.0)
    state.handle(sev.AddWorker(stimulus_id="add", address=A, nthreads=1))
    spec = sev.TaskSpec(key="parent", run_spec=b"p", name="parent")
    state.handle(sev.UpdateGraph(stimulus_id="g", client="c", tasks=(spec,), wanted=("parent",)))
    state.handle(sev.TaskSeceded(stimulus_id="sec", worker=A, key="parent"))
    state.handle(sev.AddWorker(stimulus_id="add", address=B, nthreads=1))
    out = state.handle(sev.RemoveWorker(stimulus_id="gone", address=A))
    assert [(a.worker, a.key) for a in out if isinstance(a, sev.ComputeTask)] == [(B, "parent")]
    state.validate()


# -- on a cluster of one-thread workers -------------------------------------------------


def fib(n):
    if n < 2:
        return n
    client = corral.get_client()
    a, b = client.submit(fib, n - 1), client.submit(fib, n - 2)
    corral.secede()  # without it, the last thread would wait for tasks that cannot start
    result = sum(client.gather([a, b]))
    corral.rejoin()
    return result


def total_of_incs(n):
    with corral.worker_client() as client:
        return sum(client.gather(client.map(inc, range(n))))


def inc(x):
    return x + 1


def launch():
    return corral.get_client().submit(inc, 10)


class Box:
    def __init__(self, future):
        self.future = future


def read_box(box):
    return box.future.result(timeout=20) + 1


def reader_of(future):
    def read():
        return future.result(timeout=20) * 10

    return read


def wait_for_path(path):
    while not os.path.exists(path):  # a gate the test opens; the task polls, not the test
        time.sleep(0.01)
    return path


def write_path(path, gate):
    with open(path, "w") as f:
        f.write("done")


def fails_once(path):
    if not os.path.exists(path):
        open(path, "w").close()
        raise ValueError("first time")
    return "second time"


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as c:
        yield c


def test_recursive_fib_on_one_thread_workers_does_not_deadlock(client):
    assert client.submit(fib, 12).result(timeout=60) == 144
    assert client.submit(total_of_incs, 10).result(timeout=30) == 55


def test_get_client_outside_tasks_without_a_default_says_so():
    import corral.client.worker_client as wc

    if wc._default_client() is None:
        with pytest.raises(ValueError, match="found no client"):
            corral.get_client()
    with pytest.raises(ValueError, match="in a corral task"):
        corral.secede()


def test_a_future_inside_an_object_or_closure_arrives_as_a_future_and_is_kept(client):
    x = client.submit(inc, 1)
    in_object = client.submit(read_box, Box(x))

    in_closure = client.submit(reader_of(x))
    del x  # the tasks' futures hold x until they are done
    gc.collect()
    assert in_object.result(timeout=30) == 3
    assert in_closure.result(timeout=30) == 20


def test_a_future_returned_by_a_task_is_a_future_of_the_client_reading_it(client):
    inner = client.submit(launch).result(timeout=30)
    assert isinstance(inner, Future)
    assert inner.client is client.core
    assert inner.result(timeout=30) == 11


def test_fire_and_forget_runs_a_task_nobody_holds_any_more(client, tmp_path):
    gate, out = str(tmp_path / "gate"), str(tmp_path / "out")
    opener = client.submit(wait_for_path, gate, pure=False)
    job = client.submit(write_path, out, opener)
    corral.fire_and_forget(job)
    del job, opener
    gc.collect()
    open(gate, "w").close()
    wait_until_blocking(lambda: os.path.exists(out), timeout=30)


def test_retry_runs_a_failed_task_again(client, tmp_path):
    future = client.submit(fails_once, str(tmp_path / "flag"), pure=False)
    with pytest.raises(ValueError, match="first time"):
        future.result(timeout=30)
    future.retry()
    assert future.result(timeout=30) == "second time"
    assert not future.cancelled()


def test_as_completed_takes_more_futures_and_yields_batches(client):
    ac = corral.as_completed([client.submit(inc, 1)])
    ac.update([client.submit(inc, 2)])
    ac.add(client.submit(inc, 3))
    assert ac.count() == 3
    first = next(ac)
    assert ac.count() == 2
    seen = [first, *(f for batch in ac.batches() for f in batch)]
    assert sorted(f.result() for f in seen) == [2, 3, 4]
    assert ac.is_empty()
    assert list(ac) == []
