"""The compute layer through the public API, on real worker processes.

One module-scoped cluster of two single-threaded worker processes keeps this fast.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

from corral import Client, LocalCluster, as_completed, wait
from corral.exceptions import CorralError
from tests._helpers import wait_until_blocking


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def total(*args, **kwargs):
    flat = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, dict):
            flat.extend(a.values())
        elif isinstance(a, list | tuple | set):
            flat.extend(a)
        else:
            flat.append(a)
    return sum(flat)


class Custom(Exception):
    pass


def fail(x):
    raise Custom(f"bad {x}")


def slow(x, delay=0.05):
    time.sleep(delay)
    return x


def pid_and_len(value):
    return os.getpid(), len(value)


def fetched_keys():
    from corral.worker import get_worker

    return get_worker().stats["fetched_keys"]


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster.scheduler_address) as c:
        yield c


def test_submit_and_result(client):
    assert client.submit(inc, 1).result(timeout=10) == 2


def test_map_and_gather(client):
    futures = client.map(inc, range(100))
    assert client.gather(futures) == list(range(1, 101))


def test_dependencies_inside_containers_and_kwargs(client):
    a, b = client.submit(inc, 1), client.submit(inc, 2)
    f = client.submit(total, [a, b], (a,), {"k": b}, extra=a, many={a, 10})
    assert f.result(timeout=10) == (2 + 3) + 2 + 3 + 2 + (2 + 10)


def test_gather_keeps_nested_structure(client):
    a, b = client.submit(inc, 10), client.submit(inc, 20)
    assert client.gather({"x": [a, (b, 5)], "y": a}) == {"x": [11, (21, 5)], "y": 11}


def test_exception_keeps_its_type_and_remote_traceback(client):
    future = client.submit(fail, 1)
    with pytest.raises(Custom, match="bad 1"):
        future.result(timeout=10)
    assert future.status == "error"
    assert isinstance(future.exception(), Custom)
    assert "in fail" in future.traceback()


def test_failed_dependency_propagates(client):
    bad = client.submit(fail, 2)
    downstream = client.submit(inc, bad)
    with pytest.raises(Custom, match="bad 2"):
        downstream.result(timeout=10)


def test_pure_calls_share_a_key_and_impure_ones_do_not(client):
    assert client.submit(add, 1, 2).key == client.submit(add, 1, 2).key
    assert client.submit(add, 1, 2, pure=False).key != client.submit(add, 1, 2, pure=False).key
    assert client.submit(add, 1, 2, key="mine").key == "mine"


def test_wait_and_as_completed(client):
    futures = client.map(slow, [0.3, 0.01, 0.01], delay=0.0)
    done, not_done = wait(futures, timeout=10)
    assert len(done) == 3
    assert not not_done
    slow_ones = [client.submit(slow, i, delay=0.02 * i, pure=False) for i in range(5)]
    seen = [f.result() for f in as_completed(slow_ones)]
    assert sorted(seen) == list(range(5))
    pairs = list(as_completed(client.map(inc, [100, 200]), with_results=True))
    assert sorted(r for _, r in pairs) == [101, 201]


def test_wait_first_completed_and_timeout(client):
    long = client.submit(slow, 1, delay=2, pure=False)
    short = client.submit(slow, 2, delay=0.0, pure=False)
    done, _ = wait([long, short], return_when="FIRST_COMPLETED", timeout=10)
    assert short in done
    done, not_done = wait([long], timeout=0.05)
    assert long in not_done


def test_scattered_data_is_used_where_it_lives(client):
    pids = client.run(os.getpid)
    big = np.ones(30 * 1024 * 1024 // 8)  # 30 MB
    [future] = client.scatter([big])
    (holder,) = client.who_has([future])[future.key]
    results = [client.submit(pid_and_len, future, pure=False) for _ in range(10)]
    for pid, length in client.gather(results):
        assert pid == pids[holder]
        assert length == big.size
    # No copy was made: the data still lives on one worker only.
    assert client.who_has([future])[future.key] == [holder]


def test_peer_to_peer_dependencies(client):
    a_addr, b_addr = sorted(client.nthreads())
    a = client.submit(np.arange, 1000, workers=[a_addr], pure=False)
    b = client.submit(np.arange, 1000, workers=[b_addr], pure=False)
    before = client.run(fetched_keys)
    c = client.submit(add, a, b, workers=[a_addr])
    np.testing.assert_array_equal(c.result(timeout=10), np.arange(1000) * 2)
    after = client.run(fetched_keys)
    assert after[a_addr] == before[a_addr] + 1  # a fetched b from its peer, directly
    assert after[b_addr] == before[b_addr]
    assert client.who_has([b])[b.key] == [b_addr]  # the fetched copy was dropped after use


def test_cancel(client):
    blocker = client.submit(slow, 0, delay=0.5, pure=False)
    queued = client.submit(slow, 1, delay=0.5, pure=False)
    queued.cancel()
    wait_until_blocking(queued.done)
    assert queued.cancelled()
    assert blocker.result(timeout=10) == 0


def test_released_futures_free_their_data(client):
    future = client.submit(np.zeros, 1000, pure=False)
    future.result(timeout=10)
    key = future.key
    assert client.who_has([future])[key]
    del future
    gc.collect()
    wait_until_blocking(lambda: not client.who_has().get(key))


def test_run_nthreads_and_scheduler_info(client):
    pids = client.run(os.getpid)
    assert len(pids) == 2
    assert os.getpid() not in pids.values()
    assert sorted(client.nthreads().values()) == [1, 1]
    info = client.scheduler_info()
    assert set(info["workers"]) == set(pids)


def test_run_raises_the_workers_exception(client):
    with pytest.raises(ZeroDivisionError):
        client.run(lambda: 1 / 0)


def test_scatter_broadcast_and_workers(client):
    workers = sorted(client.nthreads())
    f = client.scatter(42, broadcast=True)
    assert sorted(client.who_has([f])[f.key]) == workers
    g = client.scatter({"named": 7}, workers=[workers[1]])["named"]
    assert client.who_has([g])["named"] == [workers[1]]
    assert client.submit(add, f, g).result(timeout=10) == 49


def test_restrictions_are_honoured(client):
    target = sorted(client.nthreads())[1]
    futures = [client.submit(slow, i, delay=0, workers=[target], pure=False) for i in range(5)]
    client.gather(futures)
    for holders in client.who_has(futures).values():
        assert holders == [target]


def test_closed_client_refuses_work(cluster):
    c = Client(cluster.scheduler_address)
    c.close()
    with pytest.raises(CorralError):
        c.submit(inc, 1)


def test_get_worker_names_the_worker_running_the_task_with_in_process_workers():
    from corral.worker import get_worker

    def where() -> str:
        return get_worker().address

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        addresses = sorted(client.nthreads())
        placed = [client.submit(where, workers=[a], pure=False) for a in addresses]
        assert [f.result() for f in placed] == addresses
        assert client.run(where) == {a: a for a in addresses}


def test_a_map_sends_its_function_once_for_all_its_tasks(client, monkeypatch):
    from corral.messages import UpdateGraph

    sent = []
    send = client._core._send
    monkeypatch.setattr(client._core, "_send", lambda msg: (sent.append(msg), send(msg)))
    futures = client.map(add, range(5), range(5))
    assert client.gather(futures) == [0, 2, 4, 6, 8]
    (graph,) = [m for m in sent if isinstance(m, UpdateGraph)]
    assert len(graph.functions) == 1
    assert [t.function for t in graph.tasks] == [0] * 5
    assert all(graph.functions[0] not in t.run_spec for t in graph.tasks)
