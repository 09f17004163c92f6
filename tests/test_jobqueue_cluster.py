"""``SLURMCluster``, ``PBSCluster``, ``SGECluster``, ``LSFCluster`` without a batch system:
their scripts, and how the manager follows, cancels and replaces jobs, with the batch
system's commands replaced by fakes (tests/test_slurm.py runs a real SLURM)."""

from __future__ import annotations

import stat

import pytest

from corral.deploy import LSFCluster, PBSCluster, SGECluster, SLURMCluster
from corral.deploy.jobqueue import cluster as jobqueue_cluster
from corral.deploy.jobqueue.script import replacement_time
from corral.exceptions import JobQueueError

LOCAL = {"host": "127.0.0.1", "asynchronous": True}  # a scheduler on this test's loop
SIZES = {"cores": 4, "memory": "8GiB", "processes": 2, "walltime": "01:00:00",
         "queue": "short", "account": "proj42", "python": "/opt/py/bin/python"}


@pytest.mark.parametrize(("kind", "directives", "job_id"), [
    (SLURMCluster, ["#SBATCH -J corral-worker", "#SBATCH -p short", "#SBATCH -A proj42",
                    "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8192M",
                    "#SBATCH -t 01:00:00"], "${SLURM_JOB_ID}"),
    (PBSCluster, ["#PBS -N corral-worker", "#PBS -q short", "#PBS -A proj42",
                  "#PBS -l select=1:ncpus=4:mem=8192mb", "#PBS -l walltime=01:00:00"],
     "${PBS_JOBID}"),
    (SGECluster, ["#$ -N corral-worker", "#$ -q short", "#$ -A proj42", "#$ -pe smp 4",
                  "#$ -l h_vmem=2048M", "#$ -l h_rt=01:00:00"], "${JOB_ID}"),
    (LSFCluster, ["#BSUB -J corral-worker", "#BSUB -q short", '#BSUB -P "proj42"',
                  "#BSUB -n 4", '#BSUB -R "span[hosts=1]"', "#BSUB -M 8192MB",
                  "#BSUB -W 01:00"], "${LSB_JOBID}"),
], ids=["slurm", "pbs", "sge", "lsf"])
async def test_each_cluster_writes_its_systems_script(kind, directives, job_id, tmp_path):
    async with kind(**SIZES, job_extra=["-x"], prologue=["module load python"],
                    shared_directory=tmp_path, **LOCAL) as cluster:
        script = cluster.job_script()
        lines = script.splitlines()
        assert all(d in lines for d in directives), script
        assert f"{kind.system.prefix} -x" in lines
        assert lines[lines.index("module load python") + 1].startswith(
            "exec /opt/py/bin/python -P -m corral.cli worker --scheduler-file "
            f"{cluster.scheduler_file} --nworkers 2 --nthreads 2 --memory-limit 4294967296")
        assert f'--name "corral-worker-{job_id}"' in script
        assert cluster.security.token not in script
        assert cluster.worker_spec.nthreads == 2
        assert cluster.worker_spec.processes == 2
        assert cluster.worker_spec.memory_limit == 4 * 2**30
        # The scheduler file and the script, for their owner alone, in a 0700 directory.
        assert stat.S_IMODE(cluster.directory.stat().st_mode) == 0o700
        for path in (cluster.scheduler_file, cluster.directory / "job.sh"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert cluster.security.token in cluster.scheduler_file.read_text()
        assert (cluster.directory / "job.sh").read_text() == script
    assert not cluster.directory.exists()


def test_a_bad_spec_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="processes must be between"):
        SLURMCluster(cores=2, memory="4GiB", processes=3, shared_directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_replacement_starts_twice_the_startup_before_the_earliest_retirement():
    assert replacement_time(100.0, 3300.0, 75.0, 60.0) == 100.0 + 3225.0 - 120.0
    # A queue wait longer than half the lifetime: no earlier than half of it.
    assert replacement_time(0.0, 100.0, 0.0, 80.0) == 50.0
    assert replacement_time(0.0, 8.0, 0.4, 0.0) == pytest.approx(7.6)


class FakeBatchSystem:
    """submit / live_jobs / cancel as the cluster module calls them, in memory."""

    def __init__(self, *, listing: bool = True) -> None:
        self.listing = listing
        self.live: set[str] = set()
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.refuse = False

    async def submit(self, system, script, text):
        if self.refuse:
            raise JobQueueError("sbatch --parsable... failed: invalid partition")
        job_id = str(100 + len(self.submitted))
        self.submitted.append(job_id)
        self.live.add(job_id)
        return job_id

    async def live_jobs(self, system):
        return set(self.live) if self.listing else None

    async def cancel(self, system, ids):
        for job_id in ids:
            if job_id not in self.live:
                raise JobQueueError("scancel... failed: Invalid job id specified")
            self.live.discard(job_id)
            self.cancelled.append(job_id)


@pytest.fixture
def fake(monkeypatch):
    system = FakeBatchSystem()
    for name in ("submit", "live_jobs", "cancel"):
        monkeypatch.setattr(jobqueue_cluster, name, getattr(system, name))
    return system


def fake_joined(cluster, names):
    async def joined():
        return {name: f"tcp://10.0.0.1:{i}" for i, name in enumerate(names())}

    cluster._joined = joined


async def test_jobs_are_submitted_named_by_id_followed_and_cancelled(fake, tmp_path):
    async with SLURMCluster(cores=1, memory="1GiB", shared_directory=tmp_path,
                            **LOCAL) as cluster:
        await cluster.scale(2)
        assert fake.submitted == ["100", "101"]
        assert cluster.planned == ["corral-worker-100", "corral-worker-101"]
        fake.live.discard("101")  # ended by itself (walltime, node failure)
        await cluster._check()
        assert cluster.planned == ["corral-worker-100"]
        await cluster.scale(2)  # replaced
        assert fake.submitted == ["100", "101", "102"]
        await cluster.scale(1)  # the newest goes (nothing joined: nothing to retire)
        assert fake.cancelled == ["102"]
        fake.refuse = True
        with pytest.raises(JobQueueError, match="invalid partition"):
            await cluster.scale(3)
        assert cluster.planned == ["corral-worker-100"]  # the failed job does not count
    assert fake.cancelled == ["102", "100"]  # close() cancelled what was left
    assert not fake.live


async def test_a_job_that_ended_meanwhile_closes_quietly(fake, tmp_path):
    async with PBSCluster(cores=1, memory="1GiB", shared_directory=tmp_path,
                          **LOCAL) as cluster:
        await cluster.scale(1)
        fake.live.clear()  # it ended between two looks
    assert fake.cancelled == []


async def test_without_a_job_listing_jobs_are_followed_through_their_workers(fake, tmp_path):
    fake.listing = False  # as PBS, SGE and LSF here
    async with SGECluster(cores=1, memory="1GiB", shared_directory=tmp_path,
                          **LOCAL) as cluster:
        await cluster.scale(1)
        workers = ["corral-worker-100"]
        fake_joined(cluster, lambda: workers)
        await cluster._check()  # joined: alive
        assert cluster.planned == ["corral-worker-100"]
        workers.clear()  # its workers all left: the job is over
        await cluster._check()
        assert cluster.planned == []


@pytest.mark.parametrize("old_job_ends_first", [False, True])
async def test_adaptive_jobs_near_their_walltime_are_replaced_not_killed(
        fake, tmp_path, old_job_ends_first):
    async with SLURMCluster(cores=2, memory="2GiB", processes=2, walltime="1h",
                            shared_directory=tmp_path, **LOCAL) as cluster:
        await cluster.scale(1)
        (job,) = cluster.jobs.values()
        workers = list(job.worker_names)
        assert workers == ["corral-worker-100-0", "corral-worker-100-1"]
        fake_joined(cluster, lambda: workers)
        await cluster._check()
        assert job.joined_at is not None
        assert not job.leaving
        job.joined_at -= 3600  # an hour later
        await cluster._check()
        assert not job.leaving  # scaled by hand: never replaced
        cluster.adapt(minimum=2, maximum=2, interval=60)
        await cluster._check()
        assert job.leaving
        assert cluster.planned == []  # no longer counted...
        await cluster.adaptive.adapt()  # ...so the next round replaces it
        assert fake.submitted == ["100", "101"]
        await cluster._check()
        assert fake.cancelled == []  # the old job stays until its replacement joined
        assert len(cluster.jobs) == 2
        if old_job_ends_first:
            fake.live.discard("100")  # its workers retired by themselves, the job ended
        else:  # the replacement joined (the old workers' data moved; here they had none)
            workers[:] = ["corral-worker-101-0", "corral-worker-101-1"]
        await cluster._check()
        assert [j.job_id for j in cluster.jobs.values()] == ["101"]
        assert fake.cancelled == ([] if old_job_ends_first else ["100"])


async def test_scaling_down_by_hand_takes_leaving_jobs_along(fake, tmp_path):
    async with SLURMCluster(cores=1, memory="1GiB", shared_directory=tmp_path,
                            **LOCAL) as cluster:
        await cluster.scale(2)
        first = next(iter(cluster.jobs.values()))
        first.leaving = True
        await cluster.scale(2)  # the leaving one does not count: one more
        assert fake.submitted == ["100", "101", "102"]
        await cluster.scale(1)
        assert sorted(fake.cancelled) == ["100", "102"]
        assert cluster.planned == ["corral-worker-101"]
