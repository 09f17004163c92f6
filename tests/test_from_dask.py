"""docs/from-dask.md's table of every dask.distributed name agrees with the names dask
has (tests/data/dask_names.json) and with what corral has; and the names that table
calls *same* behave as dask's do."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

import corral
from corral import Client, LocalCluster

ROOT = Path(__file__).resolve().parent.parent
NAMES = json.loads((ROOT / "tests" / "data" / "dask_names.json").read_text())
OWNERS = {"distributed": corral, "Client": corral.Client, "Future": corral.Future,
          "LocalCluster": corral.LocalCluster}
ROW = re.compile(r"^\| `(distributed|Client|Future|LocalCluster)\.(\w+)` \| (\w+) \| (.*) \|$")
STATUSES = {"same", "differs", "elsewhere", "absent"}


def table() -> dict[tuple[str, str], tuple[str, str]]:
    text = (ROOT / "docs" / "from-dask.md").read_text()
    section = text.split("## Every name, one by one", 1)[1]
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    for line in section.splitlines():
        if (match := ROW.match(line)) is not None:
            owner, name, status, note = match.groups()
            assert (owner, name) not in rows, f"{owner}.{name} is listed twice"
            rows[owner, name] = status, note.strip()
    return rows


def test_every_dask_name_has_one_row_and_its_status_is_true_of_corral():
    rows = table()
    wanted = {(owner, name) for owner in OWNERS for name in NAMES[owner]}
    assert set(rows) == wanted, {"missing": wanted - set(rows), "extra": set(rows) - wanted}
    for (owner, name), (status, note) in rows.items():
        assert status in STATUSES, f"{owner}.{name}: {status}"
        has = hasattr(OWNERS[owner], name)
        assert has == (status in {"same", "differs"}), f"{owner}.{name} is {status}"
        if status != "same":
            assert note, f"{owner}.{name} is {status} without saying why or what instead"


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


def test_corral_cancelled_error_catches_a_cancel_and_a_restart(cluster):
    with cluster.get_client() as client:
        slow = client.submit(time.sleep, 5, pure=False)
        slow.cancel()
        with pytest.raises(corral.CancelledError):
            slow.result(timeout=10)
        done = client.submit(sum, [1, 2], pure=False)
        assert done.result() == 3
        client.restart()
        with pytest.raises(corral.CancelledError):  # dask's name catches corral's own
            done.result(timeout=10)
    assert corral.CancelledError is concurrent.futures.CancelledError


def test_write_scheduler_file_lets_another_client_in(cluster, tmp_path):
    path = tmp_path / "scheduler.json"
    with Client(cluster) as client:
        client.write_scheduler_file(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it holds the token
        with Client(scheduler_file=str(path)) as other:
            assert other.submit(sum, [2, 3]).result() == 5


def test_client_futures_of_and_the_cluster_s_dashboard_link(cluster):
    da = pytest.importorskip("dask.array")
    with cluster.get_client() as client:
        x = client.persist(da.ones(10, chunks=5))
        assert client.futures_of(x) == corral.futures_of(x)
        assert len(client.futures_of(x)) == 2
        assert cluster.dashboard_link == client.dashboard_link
        assert "/login?token=" in cluster.dashboard_link
        assert not cluster.asynchronous
