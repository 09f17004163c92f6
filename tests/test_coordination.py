"""Locks, semaphores, events, variables and queues end to end: from the client, from
inside tasks on worker processes, across clients, and when a holder dies."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from datetime import timedelta

import psutil
import pytest

import corral
from corral import Client, LocalCluster
from corral.client.coordination import (
    AsyncLock,
    AsyncQueue,
    Event,
    Lock,
    Queue,
    Semaphore,
    Variable,
)
from corral.worker.server import get_worker
from tests._helpers import wait_until, wait_until_blocking

_task_client: Client | None = None


def task_client() -> Client:
    """Inside a task: a client of the worker's scheduler (the worker's, once it has one)."""
    global _task_client
    get_client = getattr(corral, "get_client", None)
    if get_client is not None:
        return get_client()
    if _task_client is None:
        worker = get_worker()
        _task_client = Client(worker.scheduler_address, security=worker.security)
    return _task_client


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=2, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster.scheduler_address) as c:
        yield c


# -- tasks ------------------------------------------------------------------------------------


def add_one_under_lock(name: str) -> None:
    c = task_client()
    counter = Variable(f"{name}-counter", client=c)
    with Lock(name, client=c):
        value = counter.get(timeout=10)
        time.sleep(0.01)  # a read-modify-write that would lose updates unlocked
        counter.set(value + 1)


def hold_a_lease(name: str) -> tuple[float, float]:
    c = task_client()
    with Semaphore(2, name, client=c):
        start = time.time()
        time.sleep(0.1)
        return start, time.time()


def wait_for_event(name: str) -> bool:
    return Event(name, client=task_client()).wait(timeout=20)


def take_from_queue(name: str) -> list[object]:
    q = Queue(name, client=task_client())
    first, second = q.get(timeout=10), q.get(timeout=10)
    q.put(first.result() * 10)  # a future that came through the queue
    return [first.result(), second]


def hold_the_lock_until_killed(name: str) -> None:
    c = task_client()
    if Event(f"{name}-held", client=c).is_set():
        return  # run again after its worker died: nothing to hold
    Lock(name, client=c).acquire()
    Variable(f"{name}-holder", client=c).set(os.getpid())
    Event(f"{name}-held", client=c).set()
    time.sleep(60)


def inc(x: int) -> int:
    return x + 1


# -- from tasks ------------------------------------------------------------------------------


def test_a_lock_makes_read_modify_write_from_tasks_on_many_workers_exact(client):
    Variable("rmw-counter", client=client).set(0)
    futures = [client.submit(add_one_under_lock, "rmw", pure=False) for _ in range(8)]
    client.gather(futures, timeout=30)
    assert Variable("rmw-counter", client=client).get() == 8
    assert not Lock("rmw", client=client).locked()


def test_a_semaphore_limits_how_many_tasks_hold_it_at_once(client):
    spans = client.gather([client.submit(hold_a_lease, "db", pure=False) for _ in range(6)],
                          timeout=30)
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most == 2  # four threads, two leases
    assert Semaphore(2, "db", client=client).get_value() == 0


def test_tasks_wait_for_an_event_the_client_sets(client):
    futures = [client.submit(wait_for_event, "go", pure=False) for _ in range(3)]
    event = Event("go", client=client)
    assert not event.is_set()
    event.set()
    assert client.gather(futures, timeout=30) == [True, True, True]
    event.clear()
    assert not event.is_set()
    assert event.wait(timeout=0.05) is False


def test_futures_and_values_travel_through_a_queue_both_ways(client):
    q = Queue("work", client=client)
    task = client.submit(take_from_queue, "work")
    q.put(client.submit(inc, 1))  # the only reference to its future is in the queue now
    gc.collect()
    q.put({"plain": "value"})
    assert task.result(timeout=30) == [2, {"plain": "value"}]
    assert q.get(timeout=10) == 20
    assert q.qsize() == 0
    with pytest.raises(TimeoutError, match="no item within"):
        q.get(timeout=0.05)


def test_a_lease_held_by_a_task_is_released_when_its_worker_dies(client, cluster):
    lock = Lock("killed", client=client)
    task = client.submit(hold_the_lock_until_killed, "killed")
    assert Event("killed-held", client=client).wait(timeout=30)
    assert lock.acquire(timeout=0.05) is False
    psutil.Process(Variable("killed-holder", client=client).get()).kill()
    assert lock.acquire(timeout=20)  # its worker's client went with it, and its lease
    lock.release()
    task.result(timeout=30)  # run again elsewhere, where it held nothing
    wait_until_blocking(lambda: len(client.nthreads()) == 2, 30, "the nanny restarts it")


# -- from clients ------------------------------------------------------------------------------


def test_a_lock_is_one_lock_by_name_with_timeouts_and_nonblocking(client):
    a, b = Lock("by-name", client=client), Lock("by-name", client=client)
    assert a.acquire()
    assert b.acquire(blocking=False) is False
    assert b.acquire(timeout=0.1) is False
    assert b.acquire(timeout="50ms") is False  # dask's spellings of a timeout
    assert b.acquire(timeout=timedelta(milliseconds=50)) is False
    assert b.locked()
    with pytest.raises(RuntimeError, match="not acquired through this Lock"):
        b.release()
    a.release()
    with b:
        assert a.locked()
    assert not a.locked()


def test_a_client_that_disconnects_loses_its_leases(cluster, client):
    with Client(cluster.scheduler_address) as other:
        assert Lock("gone", client=other).acquire()
        assert Lock("gone", client=client).acquire(timeout=0.05) is False
    assert Lock("gone", client=client).acquire(timeout=10)


def test_a_variable_keeps_its_futures_data_for_other_clients(cluster, client):
    var = Variable("model", client=client)
    var.set(client.submit(inc, 41))
    gc.collect()
    with Client(cluster.scheduler_address) as other:
        future = Variable("model", client=other).get(timeout=10)
        assert future.result(timeout=10) == 42
    var.delete()
    with pytest.raises(TimeoutError, match="was not set"):
        var.get(timeout=0.05)


def test_a_queue_with_maxsize_makes_put_wait(client):
    q = Queue("bounded", client=client, maxsize=1)
    q.put(1)
    with pytest.raises(TimeoutError, match="no room"):
        q.put(2, timeout=0.05)
    assert q.get(batch=True) == [1]


def test_primitives_refuse_bad_arguments_at_once(client):
    with pytest.raises(ValueError, match="max_leases"):
        Semaphore(0, client=client)
    with pytest.raises(ValueError, match="non-blocking"):
        Lock("x", client=client).acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        Event("x", client=client).wait(timeout=-1)
    assert Semaphore(2, "mismatch", client=client).acquire()
    with pytest.raises(ValueError, match="max_leases=2"):
        Semaphore(3, "mismatch", client=client).acquire()


async def test_the_asynchronous_primitives_with_an_asynchronous_client(cluster):
    async with Client(cluster.scheduler_address, asynchronous=True) as c:
        lock = AsyncLock("async", client=c)
        async with lock:
            assert await lock.locked()
            assert await AsyncLock("async", client=c).acquire(timeout=0.05) is False
        q = AsyncQueue("async-q", client=c)
        await q.put(c.submit(inc, 1))
        assert await (await q.get()) == 2
        with pytest.raises(TypeError, match="use AsyncLock"):
            Lock("async", client=c).acquire()
        holder = AsyncLock("async", client=c)
        await holder.acquire()
        waiting = asyncio.ensure_future(lock.acquire())  # interrupted while it waits
        waits = cluster.scheduler.coordination.waits
        await wait_until(lambda: len(waits) == 1, 10, "the wait reaches the scheduler")
        waiting.cancel()
        await wait_until(lambda: not waits, 10, "the wait is called off")
        await holder.release()
        assert not await lock.locked()


def test_primitives_pickle_by_name(client):
    import pickle

    lock = pickle.loads(pickle.dumps(Semaphore(3, "pickled", client=client)))
    assert (lock.name, lock._async.max_leases, lock._async._client) == ("pickled", 3, None)
    q = pickle.loads(pickle.dumps(Queue("q", client=client, maxsize=4)))
    assert q._async.maxsize == 4


def use_passed_primitives(lock: Lock, queue: Queue) -> int:
    with lock:  # no client given anywhere: the worker's (corral.get_client())
        return int(queue.get(timeout=10)) + int(Variable("passed-var").get(timeout=10))


def test_primitives_passed_to_tasks_use_the_workers_client(client):
    if not hasattr(corral, "get_client"):
        pytest.skip("needs corral.get_client (tasks that launch tasks)")
    queue = Queue("passed-queue", client=client)
    queue.put(40)
    Variable("passed-var", client=client).set(2)
    future = client.submit(use_passed_primitives, Lock("passed", client=client), queue)
    assert future.result(timeout=30) == 42
