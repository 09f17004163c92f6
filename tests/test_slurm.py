"""Workers as real SLURM jobs: a controller and node daemon this module starts
(tests/_slurm.py), jobs submitted with sbatch, tracked with squeue, ended with scancel."""

from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner

from corral import Client, LocalCluster
from corral.cli import main
from corral.credentials import write_scheduler_file
from tests._helpers import wait_until_blocking
from tests._slurm import SlurmUnavailable, running_slurm

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """One SLURM for the module, its SLURM_CONF in this process's environment."""
    try:
        with running_slurm(tmp_path_factory.mktemp("slurm")) as running:
            previous = os.environ.get("SLURM_CONF")
            os.environ.update(running.environment)
            print(f"SLURM started in {running.startup_seconds:.1f} s")
            try:
                yield running
            finally:
                if previous is None:
                    os.environ.pop("SLURM_CONF", None)
                else:
                    os.environ["SLURM_CONF"] = previous
    except SlurmUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A scheduler with a token, and the scheduler file jobs read it from."""
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        path = tmp_path_factory.mktemp("shared") / "corral.json"
        write_scheduler_file(path, cluster.scheduler_address, cluster.security)
        with Client(cluster) as client:
            yield cluster, client, path


def test_corral_slurm_submit_starts_workers_that_join_with_the_token(slurm, scheduler,
                                                                       tmp_path):
    _cluster, client, path = scheduler
    began = time.monotonic()
    result = CliRunner().invoke(main, [
        "slurm", "submit", "-n", "2", "--cores", "1", "--memory", "1GiB", "--walltime", "10m",
        "--scheduler-file", str(path), "--log-directory", str(tmp_path)])
    assert result.exit_code == 0, result.output
    ids = result.output.split(": ", 1)[1].split("\n")[0].split()
    assert len(ids) == 2
    assert set(ids) <= set(slurm.jobs())
    client.wait_for_workers(2, timeout=60)
    joined = time.monotonic() - began
    names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
    assert names == sorted(f"corral-worker-{i}" for i in ids)
    assert client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
    print(f"2 workers joined {joined:.1f} s after `corral slurm submit`")
    slurm.run("scancel", *ids)
    wait_until_blocking(lambda: not set(ids) & set(slurm.jobs()), timeout=30,
                        what="the cancelled jobs to leave squeue")
    wait_until_blocking(lambda: not client.scheduler_info()["workers"], timeout=30,
                        what="the cancelled jobs' workers to leave")
