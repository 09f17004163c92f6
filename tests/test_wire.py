"""Values through a real cluster: deep, small and writable, huge, and ones that cannot travel.

Workers are processes. Where a value once crashed the process decoding it (deep
nesting), the client runs in a subprocess too, so a crash fails the test instead of
killing pytest.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

from corral import Client, LocalCluster
from corral.exceptions import CorralError


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def two_workers(client):
    first, second = sorted(client.nthreads())
    return first, second


# -- deep values ---------------------------------------------------------------------------

DEEP_CLIENT = """
import json, os, sys
from corral import Client, Security

def nest(depth):
    value = 0
    for _ in range(depth):
        value = (value,)
    return value

def depth(value):
    n = 0
    while isinstance(value, tuple):
        (value,), n = value, n + 1
    return n

address, first, second = sys.argv[1:]
with Client(address, security=Security(token=os.environ["CORRAL_TOKEN"])) as client:
    out = {}
    for n in (250, 800):
        made = client.submit(nest, n, workers=[first], pure=False)
        measured = client.submit(depth, made, workers=[second])  # a peer fetches it
        out[n] = [depth(made.result()), measured.result()]      # and so does the client
    print(json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_deep_values_through_submit_a_dependent_task_on_a_peer_and_result(cluster, two_workers):
    env = dict(os.environ, **cluster.security.environment())
    done = subprocess.run(
        [sys.executable, "-c", DEEP_CLIENT, cluster.scheduler_address, *two_workers],
        env=env, capture_output=True, text=True, timeout=100,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"250": [250, 250], "800": [800, 800]}


# -- writable arrays -----------------------------------------------------------------------


def writable(array: np.ndarray) -> bool:
    return array.flags.writeable


def set_cell(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[0, "a"] = 7
    return frame


def test_small_arrays_gathered_by_the_client_are_writable(client, two_workers):
    array = client.submit(np.arange, 10, workers=[two_workers[0]]).result()
    assert array.flags.writeable
    array[0] = 5
    frame = client.submit(pd.DataFrame, {"a": [1, 2], "b": [3.0, 4.0]}).result()
    frame.loc[0, "a"] = 7
    assert frame["a"].tolist() == [7, 2]


def test_small_arrays_fetched_by_a_task_on_another_worker_are_writable(client, two_workers):
    first, second = two_workers
    array = client.submit(np.arange, 10, workers=[first])
    frame = client.submit(pd.DataFrame, {"a": [1, 2]}, workers=[first])
    assert client.submit(writable, array, workers=[second]).result()
    assert client.submit(set_cell, frame, workers=[second]).result()["a"].tolist() == [7, 2]


def test_scattered_small_arrays_are_writable_on_the_worker(client, two_workers):
    [remote] = client.scatter([np.arange(10)], workers=[two_workers[1]])
    assert client.submit(writable, remote, workers=[two_workers[1]]).result()


# -- huge values ---------------------------------------------------------------------------

HUGE = 2**31 + 1


def huge_array() -> np.ndarray:
    array = np.zeros(HUGE, dtype="u1")
    array[[0, 12345, HUGE // 2, HUGE - 1]] = [1, 2, 3, 4]
    return array


@pytest.mark.timeout(300)
def test_a_value_over_2_gib_is_gathered_by_the_client(client, two_workers):
    future = client.submit(huge_array, workers=[two_workers[0]])
    array = future.result()
    del future
    assert array.nbytes == HUGE
    assert array[[0, 12345, HUGE // 2, HUGE - 1]].tolist() == [1, 2, 3, 4]
    assert np.count_nonzero(array) == 4
    assert array.flags.writeable


# -- values that cannot travel -------------------------------------------------------------


def test_a_failed_fetch_names_the_worker_and_its_cause(caplog):
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        (worker,) = client.nthreads()
        lock = client.submit(threading.Lock)
        with caplog.at_level(logging.WARNING, logger="corral.worker"):
            with pytest.raises(CorralError, match="could not fetch") as info:
                lock.result()
    message = str(info.value)
    assert f"{worker}: TypeError: cannot pickle '_thread.lock' object" in message
    logged = [r for r in caplog.records
              if r.name == "corral.worker" and r.levelno >= logging.WARNING]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "cannot send" in logged[0].getMessage()
    assert "_thread.lock" in logged[0].getMessage()
    assert logged[0].exc_info is None  # one line, no traceback
