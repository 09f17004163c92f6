"""``client.replicate``: the scheduler's choice of workers (pure, exact actions) and a
cluster whose workers end up holding the copies."""

from __future__ import annotations

import pytest

from corral import Client, LocalCluster
from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState
from tests._helpers import wait_until_blocking

A, B, C, D = "tcp://a:1", "tcp://b:1", "tcp://c:1", "tcp://d:1"


def add(address):
    return ev.AddWorker(stimulus_id="add", address=address, nthreads=1)


def scatter(key, worker, nbytes=10):
    return ev.ScatterData(stimulus_id="scatter", client="c", placed={key: (worker, nbytes)})


def replicate(*keys, n=0, workers=()):
    return ev.Replicate(stimulus_id="rep", keys=keys, n=n, workers=workers)


def acquire(worker, **who_has):
    return ev.AcquireReplicas(stimulus_id="rep", worker=worker, who_has=who_has,
                              nbytes={k: 10 for k in who_has})


@pytest.fixture
def state():
    s = SchedulerState()
    s.handle(add(A), add(B), add(C), add(D))
    yield s
    s.validate()


def test_every_worker_gets_a_copy_when_n_is_not_given(state):
    state.handle(scatter("x", A), scatter("y", B))
    assert state.handle(replicate("x", "y")) == [  # the empty workers are asked first
        acquire(C, x=(A,), y=(B,)), acquire(D, x=(A,), y=(B,)), acquire(B, x=(A,)),
        acquire(A, y=(B,))]


def test_copies_go_to_the_workers_holding_the_fewest_bytes(state):
    state.handle(scatter("big", B, 1000), scatter("x", A), scatter("y", C, 50))
    assert state.handle(replicate("x", n=2)) == [acquire(D, x=(A,))]
    state.handle(ev.AddKeys(stimulus_id="copied", worker=D, keys={"x": 10}))
    assert state.handle(replicate("x", n=2)) == []  # two hold it already
    assert state.handle(replicate("x", n=3)) == [acquire(C, x=(A, D))]


def test_only_the_workers_named_and_not_retiring_are_used(state):
    state.handle(scatter("x", A), scatter("z", D))
    state.handle(ev.RetireWorkers(stimulus_id="retire", workers=(D,)))
    assert state.handle(replicate("x", workers=(A, B, D))) == [acquire(B, x=(A,))]


def test_keys_not_in_memory_are_left_alone(state):
    state.handle(ev.UpdateGraph(stimulus_id="g", client="c", wanted=("p",), tasks=(
        ev.TaskSpec(key="p", run_spec=b"x"),)))
    assert [a for a in state.handle(replicate("p", "unknown")) if
            isinstance(a, ev.AcquireReplicas)] == []


@pytest.mark.timeout(60)
def test_a_cluster_holds_as_many_copies_as_asked_and_frees_them_with_the_key():
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as client:
        first, *others = sorted(client.scheduler_info()["workers"])
        [x] = client.scatter([list(range(1000))], workers=[first])
        client.replicate([x], n=2)
        assert len(client.who_has([x])[x.key]) == 2
        client.replicate([x])
        assert sorted(client.who_has([x])[x.key]) == sorted([first, *others])
        assert client.submit(len, x, workers=[others[1]]).result(timeout=10) == 1000
        key = x.key
        del x
        wait_until_blocking(lambda: not any(key in keys for keys in client.has_what().values()),
                            what="every copy freed")
