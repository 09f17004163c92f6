"""Lost links on one event loop: scheduler restarts, client reconnects, grace periods.

Scheduler, workers and clients are real servers on loopback TCP, sharing this test's
event loop so links can be cut and servers restarted precisely.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from corral import AsyncClient
from corral.exceptions import CommClosedError
from corral.scheduler import Scheduler
from corral.worker import Worker
from tests._helpers import wait_until

pytestmark = pytest.mark.usefixtures("no_leaks")


def inc(x):
    return x + 1


def slow(x, seconds):
    time.sleep(seconds)
    return x


async def test_workers_rejoin_a_scheduler_restarted_at_the_same_address():
    first = Scheduler()
    await first.listen("tcp://127.0.0.1:0")
    address = first.address
    worker = Worker(address, nthreads=1)
    await worker.start()
    client = await AsyncClient(address, reconnect_timeout=1)
    pending = client.submit(slow, 1, 3)  # still running when the scheduler dies
    await wait_until(lambda: worker.state.executing_count == 1)
    await first.close()
    # The client errs clearly within its reconnect timeout instead of hanging.
    with pytest.raises(CommClosedError, match="could not reconnect"):
        async with asyncio.timeout(15):
            await pending
    second = Scheduler()
    await second.listen(address)
    await wait_until(lambda: len(second.state.workers) == 1, timeout=20)
    async with AsyncClient(address) as fresh:
        assert await fresh.submit(inc, 41) == 42
    await client.close()
    await worker.close()
    await second.close()


async def test_client_reconnects_and_its_futures_resume():
    async with Scheduler(client_grace=10) as scheduler:
        await scheduler.listen("tcp://127.0.0.1:0")
        async with Worker(scheduler.address, nthreads=1) as worker:
            await worker.start()
            async with AsyncClient(scheduler.address) as client, \
                    AsyncClient(scheduler.address) as other:
                done = client.submit(inc, 1)
                assert await done == 2
                mine = client.submit(slow, 5, 0.5)
                theirs = other.submit(slow, 6, 0.5)
                client._stream.comm.abort()  # the link drops mid-computation
                assert await mine == 5  # reported again after the reconnect
                assert await done == 2  # data the client held is still there
                assert await theirs == 6
                assert client.id in scheduler.client_streams


async def test_a_vanished_client_releases_its_keys_after_the_grace_period():
    async with Scheduler(client_grace=0.5) as scheduler:
        await scheduler.listen("tcp://127.0.0.1:0")
        async with Worker(scheduler.address, nthreads=1) as worker:
            await worker.start()
            other = await AsyncClient(scheduler.address)
            kept = other.submit(inc, 10)
            client = await AsyncClient(scheduler.address, reconnect_timeout=0.1)
            future = client.submit(inc, 1)
            assert await future == 2
            assert future.key in worker.data
            client._closed = True  # vanish without saying goodbye ...
            client._stream.comm.abort()  # ... and never come back
            await asyncio.sleep(0.2)
            assert future.key in scheduler.state.tasks  # still within the grace period
            await wait_until(lambda: future.key not in worker.data, timeout=5)
            assert await kept == 11
            await other.close()
            await client.close()


async def test_worker_that_hears_nothing_from_the_scheduler_rejoins_afresh():
    async with Scheduler(worker_ttl=60) as scheduler:
        await scheduler.listen("tcp://127.0.0.1:0")
        async with Worker(scheduler.address, nthreads=1, scheduler_timeout=0.5,
                          heartbeat_interval=10) as worker:
            await worker.start()
            async with AsyncClient(scheduler.address) as client:
                assert await client.submit(inc, 1) == 2
                # A silent scheduler (no heartbeat acks for lack of heartbeats) looks like a
                # dead link: the worker drops everything and registers again.
                await wait_until(lambda: not worker.data, timeout=5)
                await wait_until(lambda: len(scheduler.state.workers) == 1, timeout=5)
                assert await client.submit(inc, 2) == 3
