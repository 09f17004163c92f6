"""Graceful retirement: the scheduler's decisions (pure, exact actions), the worker
keeping the copies it is asked for, and one cluster that retires and restarts."""

from __future__ import annotations

import pytest

from corral.exceptions import FutureCancelledError
from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState
from corral.worker import events as wev
from corral.worker.state import WS, WorkerState

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


def add(address, name=""):
    return ev.AddWorker(stimulus_id="add", address=address, nthreads=1, name=name)


def scatter(key, worker, nbytes=10, client="c"):
    return ev.ScatterData(stimulus_id="scatter", client=client, placed={key: (worker, nbytes)})


def retire(*workers):
    return ev.RetireWorkers(stimulus_id="retire", workers=workers)


def has(worker, **keys):
    return ev.AddKeys(stimulus_id="copied", worker=worker, keys=keys)


@pytest.fixture
def state():
    s = SchedulerState()
    yield s
    s.validate()


def test_scattered_data_is_copied_to_the_emptiest_worker_then_the_worker_closes(state):
    state.handle(add(A), add(B), add(C))
    state.handle(scatter("x", A, 10), scatter("y", A, 20), scatter("z", B, 100))
    actions = state.handle(retire(A))
    assert actions == [ev.AcquireReplicas(stimulus_id="retire", worker=C,
                                          who_has={"x": (A,), "y": (A,)},
                                          nbytes={"x": 10, "y": 20})]
    assert state.workers[A].retiring
    assert state.handle(has(C, x=10)) == []  # y is not safe yet: nothing to do
    actions = state.handle(has(C, y=20))
    assert actions == [ev.CloseWorker(stimulus_id="copied", worker=A, reason="retired"),
                       ev.DropWorker(stimulus_id="copied", worker=A, reason="retired",
                                     graceful=True),
                       ev.ReportKeyInMemory(stimulus_id="copied", client="c", key="x",
                                            who_has=(C,), nbytes=10, typename=""),
                       ev.ReportKeyInMemory(stimulus_id="copied", client="c", key="y",
                                            who_has=(C,), nbytes=20, typename="")]
    assert A not in state.workers
    assert not state.retiring
    assert state.who_has(["x", "y"]) == {"x": [C], "y": [C]}


def test_a_worker_holding_nothing_unique_closes_at_once(state):
    state.handle(add(A), add(B))
    state.handle(scatter("x", A), has(B, x=10))
    assert state.handle(retire(A)) == [
        ev.CloseWorker(stimulus_id="retire", worker=A, reason="retired"),
        ev.DropWorker(stimulus_id="retire", worker=A, reason="retired", graceful=True),
        ev.ReportKeyInMemory(stimulus_id="retire", client="c", key="x", who_has=(B,),
                             nbytes=10, typename="")]
    assert state.task_state("x") == "memory"


def test_workers_are_named_by_address_name_or_host(state):
    state.handle(add(A, name="alpha"), add("tcp://h:1"), add("tcp://h:2"), add(C))
    state.handle(retire("alpha", "h"))
    assert sorted(state.workers) == [C]


def test_no_other_worker_to_take_the_data_refuses_and_the_worker_serves_on(state):
    state.handle(add(A))
    state.handle(scatter("x", A))
    actions = state.handle(retire(A))
    assert actions == [ev.RetirementRefused(stimulus_id="retire", worker=A,
                                            reason="no other worker can take its data")]
    assert not state.workers[A].retiring
    assert not state.retiring
    state.handle(ev.UpdateGraph(stimulus_id="g", client="c", wanted=("t",), tasks=(
        ev.TaskSpec(key="t", run_spec=b"f", dependencies=("x",)),)))
    assert state.tasks["t"].processing_on is state.workers[A]


def test_a_retiring_worker_gets_no_new_task_and_its_running_task_is_not_blamed(state):
    state.handle(add(A), add(B))
    state.handle(ev.UpdateGraph(stimulus_id="g", client="c", wanted=("t",), tasks=(
        ev.TaskSpec(key="t", run_spec=b"f"),)))
    first = state.tasks["t"].processing_on.address
    other = B if first == A else A
    state.handle(ev.TaskStarted(stimulus_id="s", worker=first, key="t"))
    state.handle(scatter("d", first))
    state.handle(retire(first))
    actions = state.handle(ev.UpdateGraph(stimulus_id="g2", client="c", wanted=("u",), tasks=(
        ev.TaskSpec(key="u", run_spec=b"f"),)))
    assert [(a.worker, a.key) for a in actions if isinstance(a, ev.ComputeTask)] == [(other, "u")]
    actions = state.handle(has(other, d=10))  # safe: it closes, and "t" runs elsewhere
    assert [type(a).__name__ for a in actions] == ["CloseWorker", "ComputeTask", "DropWorker",
                                                   "ReportKeyInMemory"]
    assert state.tasks["t"].suspicious == 0
    assert state.tasks["t"].processing_on.address == other


def test_a_copy_is_asked_again_if_its_target_leaves_and_new_results_are_copied_too(state):
    state.handle(add(A), add(B), add(C))
    state.handle(scatter("x", A))
    asked = state.handle(retire(A))[0].worker
    spare = C if asked == B else B
    actions = state.handle(ev.RemoveWorker(stimulus_id="gone", address=asked))
    assert ev.AcquireReplicas(stimulus_id="gone", worker=spare, who_has={"x": (A,)},
                              nbytes={"x": 10}) in actions
    state.handle(ev.UpdateGraph(stimulus_id="g", client="c", wanted=("t",), tasks=(
        ev.TaskSpec(key="t", run_spec=b"f", workers=(A,), allow_other_workers=False),)))
    assert state.task_state("t") == "no-worker"  # only A may run it, and A is retiring


def test_a_failed_copy_drops_the_replica_and_the_lost_key_is_not_waited_for(state):
    state.handle(add(A), add(B))
    state.handle(scatter("x", A))
    state.handle(retire(A))
    actions = state.handle(ev.MissingData(stimulus_id="miss", worker=B, key="x",
                                          errant_worker=A))
    assert [type(a).__name__ for a in actions] == ["Notice", "Notice", "ReportTaskErred",
                                                   "CloseWorker", "DropWorker"]
    assert [a.event for a in actions[:2]] == ["key-lost", "task-erred"]


def test_the_worker_fetches_and_keeps_a_copy_until_freed():
    ws = WorkerState(B, 1)
    out = ws.handle(wev.AcquireReplicas(stimulus_id="r", who_has={"x": (A,)}, nbytes={"x": 5}))
    assert out == [wev.GatherDep(stimulus_id="r", peer=A, keys=("x",), total_nbytes=5)]
    out = ws.handle(wev.GatherDepSuccess(stimulus_id="got", peer=A, data={"x": 5}))
    assert [type(i).__name__ for i in out] == ["SendToScheduler"]
    assert out[0].msg.keys == {"x": 5}
    assert ws.tasks["x"].state == WS.MEMORY
    out = ws.handle(wev.FreeKeys(stimulus_id="free", keys=("x",)))
    assert out == [wev.ReleaseData(stimulus_id="free", keys=("x",))]
    assert not ws.tasks


# -- one cluster: retire_workers, scale down, restart ------------------------------------


@pytest.fixture(scope="module")
def cluster():
    from corral import LocalCluster

    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False,
                      dashboard_address=None) as c:
        yield c


def test_retire_workers_and_scale_down_keep_scattered_data_and_restart_cancels(cluster):
    from corral import Client

    with Client(cluster) as client:
        workers = sorted(client.nthreads())
        data = client.scatter(list(range(6)))
        squares = client.map(lambda v: v * v, data)
        assert client.gather(squares) == [v * v for v in range(6)]
        held = client.who_has()
        retired = client.retire_workers(workers[0])
        assert list(retired) == [workers[0]]
        cluster.scale(1)  # the newest worker goes too: gracefully
        (last,) = client.nthreads()
        assert client.gather(data) == list(range(6))  # scattered: nothing to recompute from
        assert {w for ws in client.who_has(data).values() for w in ws} == {last}
        assert len({w for ws in held.values() for w in ws}) > 1  # it was spread out before
        client.restart()
        assert all(f.status == "cancelled" for f in data + squares)
        with pytest.raises(FutureCancelledError, match="restart"):
            squares[0].result(timeout=5)
        again = client.submit(lambda v: v + 1, 1)
        assert again.result(timeout=10) == 2
        cluster.scale(2)


def test_a_retired_workers_nanny_exits_instead_of_restarting_it():
    from corral import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        data = client.scatter(list(range(4)))
        names = {info["name"]: a for a, info in client.scheduler_info()["workers"].items()}
        assert list(client.retire_workers("0")) == [names["0"]]  # by name
        assert cluster.workers["0"].process.wait(timeout=20) == 0  # nanny and worker done
        assert client.gather(data) == list(range(4))
        assert list(client.nthreads()) == [names["1"]]
