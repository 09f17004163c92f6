"""``dask.annotate(...)`` on collections, honoured by ``client.get``: workers (by address,
name or host), resources, retries, allow_other_workers and priority. In-process workers:
a plain one, and one named "gpu" that has a GPU."""

from __future__ import annotations

import itertools

import dask
import dask.array as da
import numpy as np
import pytest
from dask import delayed

from corral import Client, LocalCluster
from corral.client import annotate
from corral.utils import LoopRunner
from corral.worker import Worker


def where() -> str:
    from corral.worker import get_worker

    return get_worker().name


def where_block(block: np.ndarray) -> np.ndarray:
    return np.array([where()] * len(block), dtype=object)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        runner = LoopRunner("gpu-worker")
        gpu = Worker(cluster.scheduler_address, nthreads=1, name="gpu", resources={"GPU": 1},
                     security=cluster.security)
        runner.run(gpu.start("tcp://127.0.0.1:0"))
        try:
            with Client(cluster) as c:
                yield c
        finally:
            runner.run(gpu.close())
            runner.stop()


def test_resources_and_worker_names_send_tasks_where_they_say(client):
    plain = next(info["name"] for info in client.scheduler_info()["workers"].values()
                 if info["name"] != "gpu")
    with dask.annotate(resources={"GPU": 1}):
        on_gpu = [delayed(where, pure=False)() for _ in range(4)]
        blocks = da.zeros(8, chunks=2).map_blocks(where_block, dtype=object)
    with dask.annotate(workers=[plain]):
        on_plain = [delayed(where, pure=False)() for _ in range(4)]
    ran, ran_plain = dask.compute(on_gpu, on_plain, scheduler=client)
    assert set(ran) == {"gpu"}
    assert set(ran_plain) == {plain}
    # Every chunk, though dask fused the array's layers (and dropped their annotations).
    assert set(blocks.compute(scheduler=client)) == {"gpu"}


def test_addresses_hosts_and_allow_other_workers(client):
    gpu = next(a for a, info in client.scheduler_info()["workers"].items()
               if info["name"] == "gpu")
    with dask.annotate(workers=gpu):
        by_address = delayed(where, pure=False)()
    with dask.annotate(workers="127.0.0.1", resources={"GPU": 1}):  # a host, every worker
        by_host = delayed(where, pure=False)()
    with dask.annotate(workers="nobody", allow_other_workers=True):
        anywhere = delayed(where, pure=False)()
    assert dask.compute(by_address, by_host, anywhere, scheduler=client)[:2] == ("gpu", "gpu")


_calls = itertools.count()


def flaky(x: int) -> int:
    if next(_calls) < 2:  # in-process workers: one counter for all
        raise RuntimeError("not yet")
    return x


def test_retries_and_the_annotations_around_the_compute_call(client):
    with dask.annotate(retries=2):
        x = delayed(flaky, pure=False)(5)
    assert x.compute(scheduler=client) == 5
    with dask.annotate(resources={"GPU": 1}):  # around the call: every task
        assert delayed(where, pure=False)().compute(scheduler=client) == "gpu"


def test_priority_and_the_older_spellings_become_task_options():
    with dask.annotate(priority=7, restrictions=["w"], loose_restrictions=True, other=1):
        x = delayed(where, pure=False)()
    (key,) = x.__dask_keys__()
    assert annotate.by_key(x.__dask_graph__(), {key}) == {
        key: {"priority": 7, "workers": ["w"], "allow_other_workers": True}}


def test_persist_and_compute_honour_annotations_too(client):
    with dask.annotate(resources={"GPU": 1}):
        kept = client.persist(da.zeros(4, chunks=2).map_blocks(where_block, dtype=object))
        one = delayed(where, pure=False)()
    assert set(kept.compute(scheduler=client)) == {"gpu"}
    assert client.compute(one).result(timeout=10) == "gpu"
