"""The asynchronous API does not block its event loop.

asyncio's debug mode logs every callback (a step of a task included) that holds the
loop longer than ``slow_callback_duration``. Each test runs a realistic workload with
the loop in debug mode and fails on any such report: once with the whole cluster on
the test's loop (in-process workers), once with only the client on it (workers in
their own processes, the scheduler on a loop of its own).
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import time
import weakref

import numpy as np
import pytest

from corral import AsyncClient, Client, LocalCluster, as_completed, progress, wait
from corral.client import FIRST_COMPLETED

pytestmark = pytest.mark.usefixtures("no_leaks")

SLOW = 0.1  # seconds: what asyncio's debug mode calls a slow callback here


def inc(x):
    return x + 1


def total(values):
    return sum(values)


def boom():
    raise ValueError("boom")


@pytest.fixture
async def watched(caplog):
    """The test's loop in debug mode, its slow callbacks reported to ``caplog``."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW
    caplog.set_level(logging.WARNING, logger="asyncio")
    # Objects earlier tests left behind are no business of this one: keep the collector
    # from walking them all in the middle of a measured step.
    gc.freeze()
    yield caplog
    gc.unfreeze()
    loop.set_debug(False)


@pytest.fixture(scope="module")
def process_cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(os.getpid)  # the scheduler keeps these links to the workers open
        yield cluster


def loop_reports(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asyncio"]


async def workload(client: AsyncClient) -> None:
    """What an asynchronous user does, with every awaitable part of the API."""
    array = np.arange(1_000_000, dtype="float64")  # 8 MB each way: scatter and gather
    [remote] = await client.scatter([array])
    doubled = client.submit(np.multiply, remote, 2)
    assert (await doubled)[-1] == 2 * array[-1]
    assert np.array_equal(await client.gather(remote), array)

    futures = client.map(inc, range(200))
    bar = io.StringIO()
    await progress(futures, file=bar)  # a bar drawn from the loop
    assert "200/200" in bar.getvalue()
    done, not_done = await wait(futures)
    assert len(done) == 200
    assert not not_done
    assert await client.gather(futures) == list(range(1, 201))
    assert await client.submit(total, futures) == sum(range(1, 201))  # futures as inputs
    finished = [(f.key, r) async for f, r in as_completed(client.map(inc, range(300, 320)),
                                                          with_results=True)]
    assert sorted(r for _, r in finished) == list(range(301, 321))
    with pytest.raises(ValueError, match="boom"):
        await client.submit(boom)

    who_has = await client.who_has(futures[:3])
    assert all(who_has[f.key] for f in futures[:3])
    nthreads = await client.nthreads()
    assert sum(nthreads.values()) == 2
    info = await client.scheduler_info()
    assert set(info["workers"]) == set(nthreads)
    pids = await client.run(os.getpid)
    assert set(pids) == set(nthreads)

    blocker = client.submit(time.sleep, 1, pure=False)  # sleeps on a worker thread
    waiting = client.submit(inc, blocker)  # cannot start before the blocker is done
    await client.cancel([waiting])
    with pytest.raises(asyncio.CancelledError):
        await waiting
    also = client.submit(inc, blocker, pure=False)
    also.cancel()  # the future's own cancel() does not wait
    await wait([also], timeout=10)
    assert also.cancelled()
    await blocker


# A new client makes itself dask's scheduler, which imports dask.config (~0.1 s) the first
# time: a one-time import, not a stall of the client's own; import it before watching.
dask_config = pytest.importorskip("dask.config")

async def test_cluster_and_client_on_one_loop_never_block_it(watched):
    options = {"n_workers": 2, "threads_per_worker": 1, "processes": False,
               "dashboard_address": "127.0.0.1:0"}
    async with Client(asynchronous=True, cluster_options=options) as client:
        await workload(client)
        await client.restart()
        assert await client.submit(inc, 1, pure=False) == 2
    assert loop_reports(watched) == []


async def test_client_never_blocks_its_loop(process_cluster, watched):
    async with Client(process_cluster.scheduler_address, asynchronous=True,
                      security=process_cluster.security) as client:
        assert client.cluster is None  # only the client runs on this loop
        await workload(client)
    assert loop_reports(watched) == []


def test_every_client_method_has_an_awaitable_twin():
    """Each method of ``Client`` is on ``AsyncClient`` too, and returns something to await
    there; only submit, map, compute, persist and futures_of, which never wait, return at once in
    both, and as_current is a context manager in both."""
    for name in dir(Client):
        if name.startswith("_") or not callable(getattr(Client, name)):
            continue  # properties and attributes
        method = getattr(AsyncClient, name, None)
        assert method is not None, f"AsyncClient lacks {name}"
        returns = str(method.__annotations__.get("return"))
        awaitable = asyncio.iscoroutinefunction(method) or returns.startswith("Coroutine")
        immediate = {"submit", "map", "compute", "persist", "as_current", "futures_of"}
        assert awaitable == (name not in immediate), name


async def test_a_wait_that_returns_early_keeps_no_future_alive():
    options = {"n_workers": 1, "processes": False, "dashboard_address": None}
    async with Client(asynchronous=True, cluster_options=options) as client:
        quick = client.submit(inc, 1)
        slow = client.submit(time.sleep, 0.5, pure=False)
        done, not_done = await wait([quick, slow], return_when=FIRST_COMPLETED)
        assert not_done == {slow}
        watched_future = weakref.ref(slow)
        del slow, done, not_done
        assert watched_future() is None  # so dropping it still releases its task
