"""A dask.distributed program on corral with only its imports changed (issue 16, items
1-5): Client(n_workers=...), workers that import what the client can, the client as
dask's default scheduler, persist/compute, futures inside dask graphs. The getting-
started examples of dask's documentation run as written, on one cluster started the
way the tutorials start theirs."""

from __future__ import annotations

import os
import sys

import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")
np = pytest.importorskip("numpy")

import corral  # noqa: E402
from corral import Client, LocalCluster, wait  # noqa: E402

SIBLING = "corral_test_sibling_module"


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def where_am_i(_=None):
    return os.getpid()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """``Client(n_workers=..., threads_per_worker=..., memory_limit=...)`` as dask's
    tutorials start one (one worker process: every worker imports dask and pandas),
    after a script's sibling module became importable here (a directory on sys.path)."""
    folder = tmp_path_factory.mktemp("script")
    (folder / f"{SIBLING}.py").write_text("def triple(x):\n    return 3 * x\n")
    sys.path.insert(0, str(folder))
    try:
        with Client(n_workers=1, threads_per_worker=2, memory_limit="1GiB") as c:
            yield c
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(SIBLING, None)


# -- the getting-started examples, only the import changed ---------------------------------


def test_example_futures(client):
    def square(x):
        return x**2

    def neg(x):
        return -x

    a = client.map(square, range(10))
    b = client.map(neg, a)
    total = client.submit(sum, b)
    assert total.result() == -285
    assert client.gather(a) == [x**2 for x in range(10)]


def test_example_delayed(client):
    from dask import delayed

    data = [1, 2, 3, 4, 5]
    output = []
    for x in data:
        a = delayed(inc)(x)
        b = delayed(add)(a, 2)
        output.append(b)
    total = delayed(sum)(output)
    assert total.compute() == 30


def test_example_array(client):
    x = da.random.random((1000, 1000), chunks=(250, 250))
    y = x + x.T
    z = y[::2, 500:].mean(axis=1)
    assert z.compute().shape == (500,)
    x = x.persist()
    assert 0.45 < float(x.mean().compute()) < 0.55


def test_example_dataframe(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    pdf = pd.DataFrame({"name": ["Alice", "Bob", "Alice", "Dan"] * 25,
                        "amount": range(100), "id": range(100)})
    df = dd.from_pandas(pdf, npartitions=4)
    df = df.persist()
    got = df.groupby("name").amount.sum().compute()
    assert got.to_dict() == pdf.groupby("name").amount.sum().to_dict()
    assert df[df.amount > 50].id.count().compute() == 49


def test_example_bag(client):
    b = db.from_sequence(range(100), npartitions=4)
    assert b.filter(lambda x: x % 2 == 0).map(lambda x: x * 10).sum().compute() == 24500
    assert dict(b.map(lambda x: x % 3).frequencies().compute()) == {0: 34, 1: 33, 2: 33}


# -- item 3: the client is dask's scheduler -------------------------------------------------


def test_compute_and_dask_compute_run_on_the_cluster(client):
    from dask import delayed

    here = os.getpid()
    pids = {delayed(where_am_i)(i).compute() for i in range(4)}
    assert here not in pids
    assert set(client.run(os.getpid).values()) >= pids
    (pid,) = dask.compute(delayed(where_am_i)(0))
    assert pid != here
    assert corral.default_client() is client


def in_a_corral_task():
    from corral.worker.context import current_task

    return current_task() is not None


def compute_inside(n):
    """A task that computes a dask graph itself, as dask.distributed users write."""
    from dask import delayed

    return delayed(in_a_corral_task)().compute(), da.arange(n, chunks=2).sum().compute()


def test_compute_inside_a_task_runs_on_the_cluster_seceded(client):
    assert client.submit(compute_inside, 10).result() == (True, 45)
    # Both of the worker's threads inside such tasks at once: they secede, no deadlock.
    assert client.gather(client.map(compute_inside, [4, 6])) == [(True, 6), (True, 15)]


def test_a_new_client_is_the_default_until_it_closes_and_as_current_overrides(client):
    security = client.cluster.security
    with Client(client.scheduler_address, security=security) as second:
        assert corral.default_client() is second
        with client.as_current():
            assert corral.default_client() is client
        assert corral.default_client() is second
        with Client(client.scheduler_address, security=security, set_as_default=False):
            assert corral.default_client() is second
    assert corral.default_client() is client


def test_without_a_client_dask_schedules_as_before_and_default_client_says_so():
    code = (
        "import corral, dask\n"
        "from dask import delayed\n"
        "with corral.Client(n_workers=1, processes=False, dashboard_address=None):\n"
        "    assert type(dask.config.get('scheduler')).__name__ == 'DefaultClientProxy'\n"
        "assert dask.config.get('scheduler', None) is None\n"
        "assert delayed(sum)([1, 2]).compute() == 3\n"
        "from corral.client.defaults import route_dask_in_tasks\n"
        "route_dask_in_tasks()  # as in a worker's process: with no client, dask's own\n"
        "assert delayed(sum)([1, 2]).compute() == 3\n"
        "assert dask.persist(delayed(sum)([1, 2]))[0].compute() == 3\n"
        "try:\n"
        "    corral.default_client()\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no corral client is running"), result.stdout


def test_dask_imported_after_the_client_is_hooked_then_and_not_before():
    """Importing dask is a tenth of a cold start: a client hooks it once it is imported."""
    code = (
        "import sys, corral\n"
        "with corral.Client(n_workers=1, processes=False, dashboard_address=None) as c:\n"
        "    assert 'dask' not in sys.modules\n"
        "    import dask\n"
        "    assert type(dask.config.get('scheduler')).__name__ == 'DefaultClientProxy'\n"
        "    from corral import get_worker\n"
        "    ran_on = dask.delayed(lambda: get_worker().address)().compute()\n"
        "    assert ran_on in c.scheduler_info()['workers']\n"
        "assert dask.config.get('scheduler', None) is None\n"
        "with corral.Client(n_workers=1, processes=False, dashboard_address=None):\n"
        "    pass\n"
        "import dask.dataframe\n"  # nothing left waiting to hook it
        "assert dask.config.get('scheduler', None) is None\n"
        "print('ok')\n"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- item 2: workers import what the client can ---------------------------------------------


def test_workers_import_a_scripts_sibling_module_and_this_test_module(client):
    import importlib

    sibling = importlib.import_module(SIBLING)
    assert client.submit(sibling.triple, 5).result() == 15
    assert client.submit(inc, 1).result() == 2  # pickled by reference: tests.test_dask_door


def test_the_tutorial_clients_workers_have_the_arguments_it_was_given(client):
    (info,) = client.scheduler_info()["workers"].values()
    assert (info["nthreads"], info["memory_limit"]) == (2, 2**30)


# -- item 4: persist and compute ------------------------------------------------------------


def test_persist_keeps_the_data_on_the_cluster_in_futures_of_the_same_collection(client):
    x = da.arange(40, chunks=10)
    y = client.persist(x * 2)
    assert type(y) is type(x)
    futures = corral.futures_of(y)
    assert len(futures) == 4
    wait(y)  # a persisted collection: its futures
    corral.progress(y, disable=True)  # returns at once: all done
    assert all(f.status == "finished" for f in futures)
    assert set(client.who_has(futures)) == {f.key for f in futures}
    assert (y + 1).sum().compute() == 2 * sum(range(40)) + 40  # reused in a new graph
    z = dask.persist(y[::2])[0]  # under the default client: futures too
    assert {f.key for f in corral.futures_of(z)}.isdisjoint({f.key for f in futures})
    assert len(corral.futures_of(z)) == 4
    np.testing.assert_array_equal(z.compute(), np.arange(0, 80, 4))
    assert corral.futures_of(x) == []


def test_compute_returns_futures_and_passes_other_values_through(client):
    x = da.ones(10, chunks=5)
    future = client.compute(x.sum())
    assert isinstance(future, corral.Future)
    assert future.result() == 10
    f1, other = client.compute([x.sum() + 1, "not dask"])
    assert other == "not dask"
    assert f1.result() == 11
    np.testing.assert_array_equal(client.compute(x).result(), np.ones(10))


# -- item 5 (first half): futures inside dask graphs ---------------------------------------


def test_futures_inside_dask_graphs_are_dependencies(client):
    from dask import delayed

    f = client.submit(inc, 1)
    assert delayed(inc)(f).compute() == 3
    assert delayed(sum)([f, f, 1]).compute() == 5
    assert delayed(add)(x=f, y=f).compute() == 4
    assert delayed(inc)(delayed(inc)(f)).compute() == 4
    ones = client.submit(np.ones, 6)
    arr = da.from_delayed(ones, shape=(6,), dtype=float)
    assert (arr + 1).sum().compute() == 12
    assert corral.futures_of(delayed(inc)(f)) == [f]
    g = client.submit(inc, 2)
    assert corral.futures_of([f, {"g": g}, (f,)]) == [f, g]  # in order, each once


def test_a_future_of_another_client_in_a_graph_is_refused(client):
    from dask import delayed

    with Client(client.scheduler_address, security=client.cluster.security,
                set_as_default=False) as other:
        f = other.submit(inc, 1)
        with pytest.raises(ValueError, match="another client"):
            delayed(inc)(f).compute()


# -- item 1: Client and cluster arguments ---------------------------------------------------


def test_client_passes_cluster_arguments_and_its_cluster_scales_synchronously(tmp_path):
    with Client(n_workers=1, threads_per_worker=2, processes=False, memory_limit="1GiB",
                resources={"GPU": 1}, local_directory=str(tmp_path),
                dashboard_address=None, set_as_default=False) as c:
        assert isinstance(c.cluster, LocalCluster)
        (info,) = c.scheduler_info()["workers"].values()
        assert (info["nthreads"], info["memory_limit"]) == (2, 2**30)
        (worker,) = c.cluster.workers.values()
        assert worker.resources == {"GPU": 1}
        assert os.path.dirname(worker.local_directory) == str(tmp_path)
        assert c.cluster.scale(2) is None  # done, not a coroutine to await
        c.wait_for_workers(2, timeout=10)
        assert len(c.nthreads()) == 2
        with pytest.raises(TimeoutError, match="2 of 3 workers"):
            c.wait_for_workers(3, timeout=0.2)
    assert os.listdir(tmp_path) == []  # each worker's directory went with it


def test_a_client_given_a_cluster_has_it_as_client_cluster_and_leaves_it_open():
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as c:
            assert c.cluster is cluster
        assert cluster.scale(2) is None  # still open: not the client's to close
        assert len(cluster.scheduler.state.workers) == 2


def test_the_cluster_listens_on_the_host_ip_or_interface_given():
    from corral.deploy.options import listen_host

    with Client(interface="lo", n_workers=1, processes=False, dashboard_address=None,
                set_as_default=False) as c:
        assert c.scheduler_address.startswith("tcp://127.0.0.1:")
        assert all(a.startswith("tcp://127.0.0.1:") for a in c.nthreads())
    assert listen_host(None, "127.0.0.2", None) == "127.0.0.2"  # dask's older ip=
    assert listen_host(None, None, None) == "127.0.0.1"
    with pytest.raises(ValueError, match="one of host=, ip= and interface="):
        listen_host("0.0.0.0", None, "lo")
    with pytest.raises(ValueError, match=r"no network interface 'nope0'; there are: .*lo"):
        LocalCluster(interface="nope0", processes=False)


def test_cluster_arguments_are_refused_with_an_address_or_when_no_cluster_takes_them():
    with pytest.raises(TypeError, match="address"):
        Client("tcp://127.0.0.1:1", n_workers=2)
    with pytest.raises(TypeError, match="n_wrokers"):
        Client(n_wrokers=2)


def test_memory_limits_in_every_spelling():
    from corral.memory_limit import parse_memory_limit, system_memory

    total = system_memory()
    assert parse_memory_limit(None) == parse_memory_limit(0) == 0
    assert parse_memory_limit("2GiB") == 2 * 2**30
    assert parse_memory_limit(1e9) == parse_memory_limit("1e9") == 10**9
    assert parse_memory_limit(0.5) == int(total * 0.5)
    assert parse_memory_limit("auto", share=1 / 4) == total // 4
    with pytest.raises(ValueError, match="not a size"):
        parse_memory_limit("lots")
