"""The asynchronous client, on an in-process cluster (workers on the same event loop)."""

from __future__ import annotations

import asyncio

import pytest

from corral import AsyncClient, Client, LocalCluster, as_completed, wait


def inc(x):
    return x + 1


def boom():
    raise ValueError("boom")


async def test_async_client_end_to_end():
    async with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                            asynchronous=True) as cluster:
        client = Client(cluster.scheduler_address, asynchronous=True)
        assert isinstance(client, AsyncClient)
        async with client:
            assert await client.submit(inc, 1) == 2
            futures = client.map(inc, range(10))
            assert await client.gather(futures) == list(range(1, 11))
            done, not_done = await wait(futures)
            assert len(done) == 10
            assert not not_done
            seen = [f.key async for f in as_completed(client.map(inc, range(20, 25)))]
            assert len(seen) == 5
            with pytest.raises(ValueError, match="boom"):
                await client.submit(boom)
            with pytest.raises(RuntimeError, match="asynchronous"):
                client.submit(inc, 5).result()
            assert len(await client.nthreads()) == 2


async def test_embedded_default_async():
    async with Client(asynchronous=True, cluster_options={"processes": False}) as client:
        assert await client.submit(inc, 41) == 42
        assert client.cluster is not None
    assert client.cluster.status.value == "closed"


def test_embedded_default_sync():
    with Client(cluster_options={"n_workers": 1, "processes": False}) as client:
        assert client.submit(inc, 1).result(timeout=10) == 2
        assert client.cluster is not None


async def test_done_callbacks_run():
    async with Client(asynchronous=True, cluster_options={"processes": False}) as client:
        fired = asyncio.Event()
        future = client.submit(inc, 1)
        future.add_done_callback(lambda f: fired.set())
        await asyncio.wait_for(fired.wait(), 10)
        assert future.done()
