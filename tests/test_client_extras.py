"""The client's everyday extras on a real cluster: what workers hold and run, a key's
story, the task stream, worker logs, plugins and uploaded files, published datasets."""

from __future__ import annotations

import gc
import logging
import zipfile

import pytest

from corral import Client, LocalCluster
from corral.client.coordination import Event
from corral.client.extras import WorkerPlugin, get_task_stream
from corral.exceptions import CorralError
from corral.worker import get_worker
from tests._helpers import wait_until_blocking


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster.scheduler_address) as c:
        yield c


def inc(x: int) -> int:
    return x + 1


def fail(x: int) -> int:
    raise ValueError(x)


def wait_for(name: str, address: str, token: str) -> int:
    from corral.security import Security

    with Client(address, security=Security(token=token)) as c:
        return int(Event(name, client=c).wait(timeout=20))


def log_warning(text: str) -> str:
    logging.getLogger("corral.test").warning(text)
    return get_worker().address


def processing(client: Client) -> set[object]:
    return {key for keys in client.processing().values() for key in keys}


def test_has_what_nbytes_and_processing(client, cluster):
    future = client.submit(inc, 1, key="inc-0123456789abcdef")
    assert future.result(timeout=10) == 2
    (holder,) = client.who_has([future])[future.key]
    assert future.key in client.has_what()[holder]
    assert client.has_what([holder]) == {holder: client.has_what()[holder]}
    assert client.nbytes([future], summary=False) == {future.key: 28}
    assert client.nbytes([future]) == {"inc": 28}
    security = cluster.security
    blocked = client.submit(wait_for, "unblock", cluster.scheduler_address, security.token)
    wait_until_blocking(lambda: blocked.key in processing(client), 10, "the task is processing")
    Event("unblock", client=client).set()
    assert blocked.result(timeout=20) == 1
    assert blocked.key not in processing(client)


def test_story_tells_the_schedulers_stimuli_and_each_workers_transitions(client):
    future = client.submit(inc, 10)
    future.result(timeout=10)
    story = client.story(future)
    ours = [s for s in story if s["where"] == "scheduler"]
    assert [s["stimulus"] for s in ours][:2] == ["UpdateGraph", "TaskFinished"]
    assert ours[1]["transitions"] == [["processing", "memory"]]
    theirs = [tuple(s["transitions"][0]) for s in story if s["where"] != "scheduler"]
    assert ("executing", "memory") in theirs


def test_the_task_stream_lists_tasks_run_and_erred(client):
    with get_task_stream(client) as stream:
        client.submit(inc, 100).result(timeout=10)
        bad = client.submit(fail, 1)
        assert isinstance(bad.exception(timeout=10), ValueError)
    assert sorted((r["name"], r["status"]) for r in stream.data) == [("fail", "error"),
                                                                    ("inc", "OK")]
    record = client.get_task_stream(count=1)[0]
    assert record["key"] == bad.key
    assert record["startstops"][0]["action"] == "compute"
    assert record["startstops"][0]["start"] <= record["startstops"][0]["stop"]


def test_a_performance_report_is_a_page_of_what_ran_in_the_block(client, tmp_path):
    from corral import performance_report

    path = tmp_path / "report.html"
    with performance_report(filename=str(path), client=client):
        client.gather(client.map(inc, range(5), key=[f"inc-{i}" for i in range(5)]))
        assert isinstance(client.submit(fail, "<b>").exception(timeout=10), ValueError)
    page = path.read_text()
    assert "6 tasks (1 failed) on" in page
    assert "<td>inc</td><td>5</td>" in page
    assert "<td>fail</td><td>1</td>" in page
    assert page.count("<rect ") == 6
    assert "<b>" not in page  # keys and names are escaped


def test_get_versions_reports_every_process_and_checks_they_agree(client):
    from importlib.metadata import version

    report = client.get_versions(check=True, packages=["pytest"])
    assert set(report["workers"]) == set(client.nthreads())
    everywhere = (report["client"], report["scheduler"], *report["workers"].values())
    assert {where["packages"]["msgpack"] for where in everywhere} == {version("msgpack")}
    assert report["client"]["packages"]["pytest"] == pytest.__version__
    assert all(w["packages"]["pytest"] == pytest.__version__
               for w in report["workers"].values())


def test_a_version_mismatch_is_named():
    from corral.versions import mismatches

    same = {"packages": {"python": "3.11.7", "corral": "0.1.0", "numpy": "2.1.0"}}
    other = {"packages": {"python": "3.11.7", "corral": "0.1.0", "numpy": "1.26.4"}}
    report = {"client": same, "scheduler": {"packages": {"python": "3.11.7",
                                                         "corral": "0.1.0"}},
              "workers": {"tcp://w:1": same, "tcp://w:2": other}}
    assert mismatches(report) == ["numpy: client 2.1.0, tcp://w:2 1.26.4"]


def test_worker_logs_hold_what_the_worker_logged(client):
    address = client.submit(log_warning, "a line to find").result(timeout=10)
    logs = client.get_worker_logs(n=5)
    assert set(logs) == set(client.nthreads())
    assert any("a line to find" in line and level == "WARNING" for level, line in logs[address])
    assert len(client.get_worker_logs(n=1, workers=[address])[address]) == 1


def test_scheduler_logs_hold_what_the_schedulers_process_logged(client):
    logging.getLogger("corral.scheduler").warning("a scheduler line to find")
    logs = client.get_scheduler_logs()
    assert any(level == "WARNING" and "a scheduler line to find" in line
               for level, line in logs)
    assert len(client.get_scheduler_logs(n=1)) == 1


class Recorder(WorkerPlugin):
    name = "recorder"

    def setup(self, worker):
        worker.recorded = ["setup"]

    def transition(self, key, start, finish, **kwargs):
        get_worker().recorded.append((key, start, finish))

    def teardown(self, worker):
        worker.recorded.append("teardown")


class LooksLikeASchedulerPlugin:
    def add_worker(self, scheduler, worker):
        pass


def recorded() -> list[object]:
    return list(getattr(get_worker(), "recorded", []))


def test_worker_plugins_set_up_see_transitions_and_tear_down(client):
    assert set(client.register_plugin(Recorder())) == set(client.nthreads())
    future = client.submit(inc, 1000)
    future.result(timeout=10)
    assert client.register_plugin(Recorder(), idempotent=True) == {}  # kept, not set up again
    logs = client.run(recorded)
    assert all(log[0] == "setup" for log in logs.values())
    moves = [m[1:] for log in logs.values() for m in log[1:] if m[0] == future.key]
    assert ("executing", "memory") in moves
    client.unregister_worker_plugin("recorder")
    assert all(log[-1] == "teardown" for log in client.run(recorded).values())
    with pytest.raises(TypeError, match="runs no user code on the scheduler"):
        client.register_plugin(LooksLikeASchedulerPlugin())
    with pytest.raises(KeyError, match="no worker plugin"):
        client.unregister_worker_plugin("recorder")


class FailsToSetUp(WorkerPlugin):
    def setup(self, worker):
        raise OSError("no GPU here")


def test_a_plugin_that_fails_to_set_up_says_where_and_why(client):
    with pytest.raises(CorralError, match="no GPU here"):
        client.register_plugin(FailsToSetUp(), name="fails")
    client.unregister_worker_plugin("fails")


def use_uploaded() -> tuple[str, str]:
    import corral_test_upload_py
    import corral_test_upload_zip

    return corral_test_upload_py.hello(), corral_test_upload_zip.NAME


def test_uploaded_files_reach_every_worker_now_and_later(client, cluster, tmp_path):
    module = tmp_path / "corral_test_upload_py.py"
    module.write_text("def hello():\n    return 'hi'\n")
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("corral_test_upload_zip/__init__.py", "NAME = 'zipped'\n")
    client.upload_file(str(module))
    client.upload_file(str(archive))
    assert client.submit(use_uploaded).result(timeout=10) == ("hi", "zipped")
    cluster.scale(3)
    try:
        wait_until_blocking(lambda: len(client.nthreads()) == 3, 30, "a third worker joins")
        assert set(client.run(use_uploaded).values()) == {("hi", "zipped")}
        module.write_text("def hello():\n    return 'hello again'\n")
        client.upload_file(str(module))  # a module already imported is reloaded
        assert set(client.run(use_uploaded).values()) == {("hello again", "zipped")}
    finally:
        cluster.scale(2)
        wait_until_blocking(lambda: len(client.nthreads()) == 2, 30, "back to two workers")


def test_datasets_are_published_got_by_other_clients_and_unpublished(client, cluster):
    client.publish_dataset(result=client.submit(inc, 1), config={"n": 3})
    gc.collect()  # the publishing client keeps no future: the dataset does
    client.publish_dataset([1, 2], name="listed")
    with pytest.raises(KeyError, match="already published"):
        client.publish_dataset(config={})
    with Client(cluster.scheduler_address) as other:
        assert other.list_datasets() == ["config", "listed", "result"]
        assert other.get_dataset("result").result(timeout=10) == 2
        assert other.datasets["config"] == {"n": 3}
        other.datasets["config"] = {"n": 4}  # the mapping overrides
        del other.datasets["listed"]
    assert client.get_dataset("config") == {"n": 4}
    assert sorted(client.datasets) == ["config", "result"]
    client.unpublish_dataset("result")
    client.unpublish_dataset("config")
    with pytest.raises(KeyError, match="no dataset named 'result'"):
        client.get_dataset("result")
    assert client.get_dataset("result", default=None) is None
    with pytest.raises(KeyError, match="within"):
        client.get_dataset("never", timeout=0.05)


def test_a_finished_futures_type_is_its_results_class(client):
    import collections

    number = client.submit(inc, 1)
    ordered = client.submit(collections.OrderedDict, a=1)
    assert number.result(timeout=10) == 2
    assert number.type is int
    ordered.result(timeout=10)
    assert ordered.type is collections.OrderedDict
    assert "type: collections.OrderedDict" in repr(ordered)


def test_a_type_is_found_only_among_modules_imported_here():
    from corral.client.future import _loaded_class

    assert _loaded_class("") is None
    assert _loaded_class("int") is int
    assert _loaded_class("collections.abc.Mapping") is not None
    assert _loaded_class("no_such_module_here.Thing") is None
    assert _loaded_class("builtins.len") is None  # not a class
