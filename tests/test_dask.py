"""``client.get``, dask's scheduler interface: dask's own test mixin for ``get``
functions, and dask.array, dask.bag and dask.dataframe checked against dask's
synchronous scheduler. One module-scoped cluster of in-process workers keeps this
fast; one test runs on worker processes.
"""

from __future__ import annotations

import operator
import subprocess
import sys

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask._task_spec import Alias, DataNode, Dict, List, Task, TaskRef
from dask.utils_test import GetFunctionTestMixin, add, inc

from corral import Client, LocalCluster
from corral.messages import UpdateGraph
from tests._helpers import wait_until_blocking


class Custom(Exception):
    pass


def fail(x):
    raise Custom(f"bad {x}")


def worker_address():
    from corral.worker import get_worker

    return get_worker().address


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster) as c:
        yield c


class TestGetFunction(GetFunctionTestMixin):
    """dask's checks of what every ``get`` function must do."""

    @pytest.fixture(autouse=True)
    def _bind(self, client):
        self.client = client

    def get(self, dsk, keys, **kwargs):
        return self.client.get(dsk, keys, **kwargs)

    # 10 000 tasks one after another, each a round trip through the scheduler.
    @pytest.mark.timeout(180)
    def test_get_stack_limit(self):
        super().test_get_stack_limit()


def test_array_matches_synchronous_scheduler(client):
    x = da.arange(400, chunks=37).reshape(20, 20).rechunk(6)
    results = [
        x.sum(),
        (x @ x.T).mean(axis=0),
        x[::3, 2:].T + 1,
        da.linalg.qr(x.rechunk((5, 20)) + 1.0)[1],
    ]
    expected = dask.compute(*results, scheduler="sync")
    for got, want in zip(dask.compute(*results, scheduler=client.get), expected, strict=True):
        np.testing.assert_allclose(got, want)
    np.testing.assert_array_equal(x.compute(scheduler=client.get), np.arange(400).reshape(20, 20))


def test_the_client_itself_is_a_scheduler(client):
    x = da.arange(100, chunks=10)
    assert x.sum().compute(scheduler=client) == sum(range(100))
    with dask.config.set(scheduler=client):
        assert db.from_sequence(range(10), npartitions=3).sum().compute() == 45


def test_bag_matches_synchronous_scheduler(client):
    b = db.from_sequence(range(100), npartitions=7)
    results = [
        b.map(inc).filter(lambda v: v % 3).sum(),
        b.map(lambda v: v % 5).frequencies(sort=True),
        b.foldby(lambda v: v % 4, operator.add, 0),
        b.map(str).distinct().count(),
    ]
    got = dask.compute(*results, scheduler=client.get)
    assert got == dask.compute(*results, scheduler="sync")
    assert b.map(inc).compute(scheduler=client.get) == list(range(1, 101))


def test_dataframe_matches_synchronous_scheduler(client):
    pdf = pd.DataFrame({"g": np.arange(200) % 7, "x": np.arange(200.0), "y": np.arange(200) % 13})
    df = dd.from_pandas(pdf, npartitions=5)
    grouped = df.groupby("g").x.sum()
    joined = df.merge(df[["g", "y"]].drop_duplicates(), on="g", suffixes=("", "_r"))
    got_grouped, got_len = dask.compute(grouped, joined.x.count(), scheduler=client.get)
    want_grouped, want_len = dask.compute(grouped, joined.x.count(), scheduler="sync")
    pd.testing.assert_series_equal(got_grouped, want_grouped)
    assert got_len == want_len
    pd.testing.assert_frame_equal(df[df.x > 50].compute(scheduler=client.get), pdf[pdf.x > 50])


def test_task_spec_graph_with_tuple_keys_and_nested_output(client):
    dsk = {
        ("a", 0): DataNode(("a", 0), 1),
        ("a", 1): Task(("a", 1), add, TaskRef(("a", 0)), 10),
        "alias": Alias("alias", ("a", 1)),
        "list": Task("list", sum, List(TaskRef(("a", 0)), TaskRef("alias"))),
        "dict": Task("dict", dict, Dict(x=TaskRef(("a", 0)), y=List(TaskRef("list"), 5))),
    }
    keys = [[("a", 0), ("a", 1)], "alias", [["dict"]]]
    assert client.get(dsk, keys) == ((1, 11), 11, (({"x": 1, "y": [12, 5]},),))


def test_task_exception_keeps_its_type(client):
    dsk = {"x": 1, "bad": (fail, "x"), "after": (inc, "bad")}
    with pytest.raises(Custom, match="bad 1"):
        client.get(dsk, ["x", "after"])
    with pytest.raises(Custom, match="bad 2"):
        dask.delayed(fail)(2).compute(scheduler=client.get)


def test_whole_graph_goes_in_one_message_and_is_released(client, monkeypatch):
    sent = []
    send = client._core._send
    monkeypatch.setattr(client._core, "_send", lambda msg: (sent.append(msg), send(msg)))

    def graphs():
        found = [m for m in sent if isinstance(m, UpdateGraph)]
        sent.clear()
        return found

    dsk = {("x", i): (inc, i) for i in range(20)}
    dsk["total"] = (sum, [("x", i) for i in range(20)])
    dsk["unneeded"] = (inc, "total")
    assert client.get(dsk, "total") == 210
    (graph,) = graphs()
    assert sorted(map(str, (t.key for t in graph.tasks))) == sorted(
        map(str, set(dsk) - {"unneeded"})
    )
    assert graph.wanted == ("total",)

    x = da.ones((40, 40), chunks=10)
    assert (x + x.T).sum().compute(scheduler=client.get) == 3200
    (graph,) = graphs()
    assert len(graph.tasks) > 16  # every chunk, and the reductions of them
    wait_until_blocking(lambda: client.scheduler_info()["tasks"] == {})


def test_task_options_apply_and_other_schedulers_options_are_ignored(client):
    target = sorted(client.nthreads())[1]
    dsk = {"where": (worker_address,)}
    assert client.get(dsk, "where", workers=[target], num_workers=4) == target


async def test_async_client_get(cluster):
    async with Client(cluster.scheduler_address, asynchronous=True) as c:
        assert await c.get({"x": 1, "y": (inc, "x")}, ["y", ["x"]]) == (2, (1,))
        with pytest.raises(RuntimeError, match="asynchronous"):  # dask.compute would block
            dask.compute(da.ones(3), scheduler=c)


def test_on_worker_processes():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            x = da.arange(100, chunks=10)
            assert (x * 2).sum().compute(scheduler=client.get) == 9900
            with pytest.raises(ZeroDivisionError):
                client.get({"one": 1, "boom": (operator.truediv, "one", 0)}, "boom")


def test_import_corral_does_not_import_dask():
    code = "import sys, corral, corral.client; assert 'dask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
