"""A corral shuffle between workers on different hosts: each worker in a network
namespace of its own, with its own local directory, reachable only through the
scheduler's namespace (the topology of ``tests/test_partition.py``, whose helpers build
and remove it). dask's ``disk`` method would need one filesystem; corral's shuffle moves
every piece between the hosts over the workers' own connections."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from corral.security import new_token
from tests.test_partition import SCHEDULER_PORT, UNAVAILABLE, Processes, network

pytestmark = pytest.mark.skipif(bool(UNAVAILABLE), reason=UNAVAILABLE or "")

# Run in the scheduler's namespace (the test's own cannot reach it); one JSON line out.
DRIVER = textwrap.dedent("""
    import json, sys
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd
    from corral import Client
    from corral.security import Security

    def where(frame):
        from corral.worker import get_worker
        return frame.assign(worker=get_worker().name)

    with Client(sys.argv[1], security=Security(token=sys.argv[2])) as client:
        client.wait_for_workers(2, timeout=60)
        rng = np.random.default_rng(0)
        left = pd.DataFrame({"k": rng.integers(0, 40, 4000), "v": rng.random(4000)})
        right = pd.DataFrame({"k": np.arange(40), "w": np.arange(40) * 10})
        a = dd.from_pandas(left, npartitions=8)
        b = dd.from_pandas(right, npartitions=3)
        shuffled = a.shuffle("k", npartitions=4).map_partitions(
            where, meta={**a.dtypes, "worker": str}).compute()
        merged = a.merge(b, on="k").compute()
        want = left.merge(right, on="k")
        key = ["k", "v"]
        same = merged.sort_values(key).reset_index(drop=True).equals(
            want.sort_values(key).reset_index(drop=True))
        shuffled_ok = sorted(shuffled["v"]) == sorted(left["v"])
        print(json.dumps({"merge_exact": bool(same), "shuffle_exact": shuffled_ok,
                          "ran_on": sorted(set(shuffled["worker"]))}))
""")


@pytest.mark.timeout(180)
def test_a_shuffle_and_a_merge_between_two_hosts_are_exact(tmp_path):
    token = new_token()
    with network() as ns:
        procs = Processes(token)
        try:
            procs.start(ns["s"], "-m", "corral.cli", "--log-level", "warning", "scheduler",
                        "--host", "0.0.0.0", "--port", str(SCHEDULER_PORT))
            for role, subnet in (("a", 1), ("b", 2)):
                (tmp_path / role).mkdir()
                procs.start(ns[role], "-m", "corral.cli", "--log-level", "warning", "worker",
                            f"tcp://10.231.{subnet}.1:{SCHEDULER_PORT}", "--nthreads", "1",
                            "--host", f"10.231.{subnet}.2", "--port", "9000", "--name", role,
                            "--local-directory", str(tmp_path / role))
            driver = procs.start(ns["s"], "-c", DRIVER, f"tcp://127.0.0.1:{SCHEDULER_PORT}",
                                 token, stdout=subprocess.PIPE, text=True)
            out, _ = driver.communicate(timeout=150)
        finally:
            procs.stop_all()
    assert driver.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"merge_exact": True, "shuffle_exact": True, "ran_on": ["a", "b"]}
