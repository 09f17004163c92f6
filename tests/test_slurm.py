"""Workers as real SLURM jobs: a controller and node daemon this module starts
(tests/_slurm.py), jobs submitted with sbatch, tracked with squeue, ended with scancel."""

from __future__ import annotations

import os
import stat
import time

import psutil
import pytest
from click.testing import CliRunner

from corral import Client, LocalCluster
from corral.cli import main
from corral.credentials import write_scheduler_file
from corral.deploy import SLURMCluster
from corral.scheduler import stimulus_log
from corral.scheduler.state import SchedulerState
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


def _names(client) -> list[str]:
    return sorted(w["name"] for w in client.scheduler_info()["workers"].values())


def _overlapped(cluster, name: str) -> bool:
    """Whether, replaying the scheduler's stimuli, another worker was there while the
    worker ``name`` still was (the order the scheduler saw, not what a poll caught)."""
    while True:  # the scheduler's loop may log a stimulus while this thread copies
        try:
            recording = stimulus_log.load(stimulus_log.record(cluster.scheduler.state))
            break
        except RuntimeError:
            continue
    assert recording.complete
    state = SchedulerState(**recording.options)
    for stimulus in recording.stimuli:
        state.handle(stimulus)
        names = {w.name for w in state.workers.values()}
        if name in names and len(names) > 1:
            return True
    return False


def test_slurm_cluster_scales_through_sbatch_retires_and_cancels_on_close(slurm, tmp_path):
    with SLURMCluster(cores=1, memory="1GiB", walltime="10m", shared_directory=tmp_path,
                      poll_interval=0.5) as cluster, Client(cluster) as client:
        token = cluster.security.token
        assert token not in cluster.job_script()
        assert stat.S_IMODE(cluster.scheduler_file.stat().st_mode) == 0o600
        began = time.monotonic()
        cluster.scale(2)
        ids = [job.job_id for job in cluster.jobs.values()]
        assert len(ids) == 2
        assert set(ids) <= set(slurm.jobs())
        client.wait_for_workers(2, timeout=60)
        joined = time.monotonic() - began
        print(f"SLURMCluster: 2 workers joined {joined:.1f} s after scale(2) (real sbatch)")
        assert _names(client) == sorted(f"corral-worker-{i}" for i in ids)
        assert client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
        # No process on the node shows the token on its command line.
        assert not [p.pid for p in psutil.process_iter(["cmdline"])
                    if token in " ".join(p.info["cmdline"] or ())]
        # Scaling down retires first: the data only the leaving worker holds moves.
        data = client.scatter(list(range(8)), broadcast=False)
        cluster.scale(1)
        assert len(cluster.jobs) == 1
        assert client.gather(data) == list(range(8))
        (gone,) = set(ids) - {job.job_id for job in cluster.jobs.values()}
        wait_until_blocking(lambda: gone not in slurm.jobs(), timeout=30,
                            what="the job scaled away to leave squeue")
        assert any(line for key, lines in cluster.get_logs().items()
                   if key.startswith("job ") for line in lines)  # the job's own output
    began = time.monotonic()
    # close() returned once squeue listed none of its jobs (scancel, then waited).
    assert not set(ids) & set(slurm.jobs())
    assert not cluster.directory.exists()  # scheduler file and script removed
    print(f"close(): squeue empty of its jobs, checked {time.monotonic() - began:.2f} s later")


def test_adaptive_slurm_cluster_replaces_a_job_before_its_walltime(slurm, tmp_path):
    """Workers that retire 8 s after they start (as they would before a walltime): the
    replacement joins before the old worker leaves, and the data moves to it."""
    with SLURMCluster(cores=1, memory="1GiB", walltime="10m", lifetime="8s",
                      shared_directory=tmp_path, poll_interval=0.2) as cluster, \
            Client(cluster) as client:
        cluster.adapt(minimum=1, maximum=1, interval=0.2)
        client.wait_for_workers(1, timeout=60)
        (first,) = _names(client)
        data = client.scatter([1, 2, 3], broadcast=False)
        wait_until_blocking(lambda: _names(client) not in ([first], []), timeout=40,
                            what=lambda: _names(client))
        wait_until_blocking(lambda: first not in _names(client), timeout=40,
                            what=lambda: _names(client))
        assert _overlapped(cluster, first), \
            "the replacement joined only after the old worker left"
        assert client.gather(data) == [1, 2, 3]
        first_id = first.rsplit("-", 1)[1]
        wait_until_blocking(lambda: first_id not in slurm.jobs(), timeout=30,
                            what="the replaced job to end")
        wait_until_blocking(lambda: len(cluster.jobs) == 1, timeout=10,
                            what=lambda: cluster.jobs)
