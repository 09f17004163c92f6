"""``SLURMCluster``, ``PBSCluster``, ``SGECluster``, ``LSFCluster``: workers as batch jobs.

Theory of operation
-------------------
* A ``ClusterManager`` (``corral.deploy.spec``) whose jobs are batch jobs. The
  scheduler runs in this process, listening on ``host`` (all interfaces by default:
  the compute nodes must reach it) and demanding the cluster's token. Once it listens,
  its address and credentials go to a scheduler file (``corral.credentials``: mode
  0600, written atomically) in a directory of its own (0700) under
  ``shared_directory``, ``~/.corral/jobqueue`` by default, which must be on a
  filesystem the compute nodes share. Every job runs the same script
  (``job_script()``): it names that file, never the token, so neither the script,
  nor the batch system's copy, nor any command line holds a secret.
* ``new_job`` makes a ``BatchJob``: ``start`` submits the script (``sbatch``, ``qsub``,
  ``bsub``) and keeps the id the system gives; its workers join as
  ``{job_name}-{id}`` (``-0``, ``-1``, ... with several processes), which is how the
  base knows which workers are the job's. ``close`` cancels it (``scancel``, ``qdel``,
  ``bkill``); scaling down retires its workers first (the base's part).
* A watch task looks every ``poll_interval`` seconds at the jobs the batch system
  still lists (``squeue``; a system with no listing here is followed through the
  workers: a job whose workers joined and all left has ended) and at the workers
  joined. A job that ended by itself is dropped; the next ``scale`` or adaptive round
  replaces it.
* Walltimes. A job's workers retire themselves gracefully a margin before its
  walltime (``--lifetime``, ``script.lifetime_for``). While adaptive scaling runs, the
  watch task marks a job ``leaving`` from ``script.replacement_time``: twice the time
  this cluster's jobs took to join before its workers' earliest retirement. A leaving
  job is no longer counted, so the next adaptive round submits its replacement. Once a
  job submitted since has joined, the leaving job's workers are retired (their data
  moves to the new ones) and it is cancelled, or, if it ends first, dropped. Scaled by
  hand, jobs are not replaced (``adapt(minimum=n, maximum=n)`` keeps ``n`` workers
  across walltimes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from corral.credentials import write_scheduler_file
from corral.deploy.jobqueue.commands import cancel, live_jobs, submit, write_script
from corral.deploy.jobqueue.script import (
    DEATH_TIMEOUT,
    JOB_NAME,
    JobSpec,
    replacement_time,
)
from corral.deploy.jobqueue.systems import LSF, PBS, SGE, SLURM, BatchSystem
from corral.deploy.spec import ClusterManager, Job, Status, WorkerSpec
from corral.exceptions import JobQueueError
from corral.security import Security

logger = logging.getLogger("corral.deploy")

SHARED_DIRECTORY = "~/.corral/jobqueue"
GONE_TIMEOUT = 30.0  # seconds close() waits for cancelled jobs to leave the queue
LOG_LINES = 200  # of each job's output kept by get_logs()


class JobQueueCluster(ClusterManager):
    """A scheduler in this process and workers in batch jobs of ``system``.

    Each job asks for ``cores`` and ``memory`` (``"16GiB"``) on one node, for
    ``walltime`` (``"01:00:00"``, ``"90m"``), in ``queue`` charged to ``account``, with
    ``job_extra`` directives (without their prefix) and ``prologue`` shell lines run
    first; it runs ``processes`` workers (about the square root of ``cores`` by
    default) sharing them. ``python`` is the interpreter with corral on the compute
    nodes (this one by default), ``interface`` the network interface the workers
    listen on (all by default). The scheduler file and the jobs' output go to a new
    directory under ``shared_directory`` (a filesystem the compute nodes share),
    removed by ``close()``; ``log_directory`` keeps the output elsewhere.
    ``poll_interval`` is how often the batch system is asked which jobs still run.
    """

    system: ClassVar[BatchSystem]

    def __init__(
        self,
        *,
        cores: int,
        memory: str | float,
        processes: int | None = None,
        walltime: str | float | None = None,
        queue: str | None = None,
        account: str | None = None,
        job_name: str = JOB_NAME,
        job_extra: Sequence[str] = (),
        prologue: Sequence[str] = (),
        python: str | None = None,
        interface: str | None = None,
        worker_args: Sequence[str] = (),
        lifetime: str | float | None = None,
        death_timeout: float = DEATH_TIMEOUT,
        log_directory: str | None = None,
        shared_directory: str | os.PathLike[str] = SHARED_DIRECTORY,
        poll_interval: float = 5.0,
        n_workers: int = 0,
        host: str = "0.0.0.0",
        scheduler_port: int = 0,
        security: Security | None = None,
        asynchronous: bool = False,
        dashboard_address: str | None = None,
        **scheduler_options: Any,
    ) -> None:
        base = Path(shared_directory).expanduser()
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        spec_options: dict[str, Any] = dict(
            cores=cores, memory=memory, processes=processes, walltime=walltime, queue=queue,
            account=account, job_name=job_name, job_extra=job_extra, prologue=prologue,
            python=python, interface=interface, worker_args=worker_args, lifetime=lifetime,
            death_timeout=death_timeout)
        JobSpec.make(**spec_options)  # refuse a bad spec before making anything
        # 0700, only this user's: it holds the scheduler file (and the jobs' output).
        self.directory = Path(tempfile.mkdtemp(prefix="cluster-", dir=base)).resolve()
        self.scheduler_file = self.directory / "scheduler.json"
        self.spec = JobSpec.make(**spec_options,
                                 log_directory=log_directory or str(self.directory))
        self.poll_interval = poll_interval
        self.worker_spec = WorkerSpec(nthreads=self.spec.threads,
                                      memory_limit=self.spec.worker_memory,
                                      processes=self.spec.processes)
        self._startups: deque[float] = deque(maxlen=5)  # seconds from submission to joined
        self._watcher: asyncio.Task[None] | None = None
        super().__init__(n_workers=n_workers, security=security, asynchronous=asynchronous,
                         host=host, scheduler_port=scheduler_port,
                         dashboard_address=dashboard_address, **scheduler_options)

    def job_script(self) -> str:
        """The script every job of this cluster runs (it names the scheduler file)."""
        return self.system.job_script(self.spec, str(self.scheduler_file))

    def new_job(self, name: str) -> Job:
        return BatchJob(name, self)

    # -- lifecycle -----------------------------------------------------------------------

    async def _start_scheduler(self) -> str:
        address = await super()._start_scheduler()
        write_scheduler_file(self.scheduler_file, address, self.security)
        write_script(self.directory, "job.sh", self.job_script())
        return address

    async def _start(self) -> None:
        await super()._start()
        if self.status == Status.RUNNING and self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())

    async def _close(self) -> None:
        if self.status in (Status.CLOSING, Status.CLOSED):
            return
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        ids = [j.job_id for j in self.jobs.values()
               if isinstance(j, BatchJob) and j.job_id is not None and not j.ended]
        try:
            await super()._close()  # cancels every job, then stops the scheduler
            await self._wait_gone(ids)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _wait_gone(self, ids: list[str]) -> None:
        """Until the batch system lists none of ``ids`` (those of systems with no
        listing here are taken as gone once cancelled)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GONE_TIMEOUT
        while ids:
            try:
                live = await live_jobs(self.system)
            except JobQueueError as e:
                logger.warning("%s", e)
                return
            if live is None or not set(ids) & live:
                return
            if loop.time() > deadline:
                logger.warning("%s jobs %s still listed %g s after they were cancelled",
                               self.system.name, " ".join(sorted(set(ids) & live)),
                               GONE_TIMEOUT)
                return
            await asyncio.sleep(0.2)

    # -- following the jobs --------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self._check()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a controller briefly away: try again next time
                logger.warning("watching %s jobs: %s: %s", self.system.name,
                               type(e).__name__, e)

    async def _check(self) -> None:
        """Note which jobs have joined, ended or are to be replaced; drop ended ones."""
        asked = time.monotonic()
        live = await live_jobs(self.system)
        joined = await self._joined()
        now = time.monotonic()
        life = self.spec.worker_lifetime()
        adaptive = self.adaptive is not None and self.adaptive.running
        for job in list(self.jobs.values()):
            if not isinstance(job, BatchJob) or job.listed_at is None or job.ended:
                continue
            present = any(w in joined for w in job.worker_names)
            if present and job.joined_at is None and job.submitted_at is not None:
                job.joined_at = now
                self._startups.append(now - job.submitted_at)
            if live is not None:
                if job.listed_at < asked and job.job_id not in live:
                    job.ended = True
            elif job.joined_at is not None and not present:
                job.ended = True
            if job.ended:
                self._log(f"job {job.name} ({self.system.name} {job.job_id}) ended")
            elif (adaptive and life is not None and not job.leaving
                  and job.joined_at is not None and now >= replacement_time(
                      job.joined_at, life[0], life[1], max(self._startups, default=0.0))):
                job.leaving, job.leaving_since = True, now
                self._log(f"job {job.name} ({self.system.name} {job.job_id}) nears its "
                          "walltime: replacing it")
        assert self._lock is not None
        async with self._lock:
            for name, job in list(self.jobs.items()):
                if job.leaving and not job.alive():
                    del self.jobs[name]
            # Replaced: once a job submitted since has joined, retire (data moves) and
            # cancel, rather than wait for the workers' lifetime.
            batch = [j for j in self.jobs.values() if isinstance(j, BatchJob)]
            replaced: list[Job] = [j for j in batch if j.leaving_since is not None and any(
                not o.leaving and o.joined_at is not None and o.submitted_at is not None
                and o.submitted_at >= j.leaving_since for o in batch)]
            await self._stop_jobs(replaced, force=False)


class BatchJob(Job):
    """One batch job of a ``JobQueueCluster``: submitted by ``start``, cancelled by
    ``close``; its workers are named after the id the batch system gave it."""

    def __init__(self, name: str, cluster: JobQueueCluster) -> None:
        super().__init__(name, processes=cluster.spec.processes)
        self.cluster = cluster
        self.job_id: str | None = None
        self.submitted_at: float | None = None  # monotonic, when it was submitted
        self.listed_at: float | None = None  # monotonic, once the system had taken it
        self.joined_at: float | None = None  # monotonic, once its workers were seen
        self.leaving_since: float | None = None  # monotonic, once marked leaving
        self.ended = False

    @property
    def worker_names(self) -> tuple[str, ...]:
        stem = f"{self.cluster.spec.job_name}-{self.job_id or f'unsubmitted-{self.name}'}"
        if self.processes == 1:
            return (stem,)
        return tuple(f"{stem}-{i}" for i in range(self.processes))

    async def start(self) -> None:
        c = self.cluster
        began = time.monotonic()
        self.job_id = await submit(c.system, c.directory / "job.sh", c.job_script())
        self.submitted_at, self.listed_at = began, time.monotonic()
        c._log(f"job {self.name}: {c.system.name} job {self.job_id}")

    def alive(self) -> bool:
        return self.job_id is not None and not self.ended

    async def close(self) -> None:
        if self.job_id is None or self.ended:
            return
        self.ended = True
        system = self.cluster.system
        try:
            await cancel(system, [self.job_id])
        except JobQueueError:
            live = await live_jobs(system)
            if live is None or self.job_id in live:
                raise  # (else it had ended by itself meanwhile)

    def kill_now(self) -> None:
        if self.job_id is not None and not self.ended:
            self.ended = True
            with contextlib.suppress(OSError):
                subprocess.Popen([*self.cluster.system.cancel, self.job_id],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)

    def logs(self) -> list[tuple[str, str]]:
        """The last lines of its output files (where the system's names for them are
        known: SLURM and LSF)."""
        spec = self.cluster.spec
        if self.job_id is None or spec.log_directory is None:
            return []
        lines: list[tuple[str, str]] = []
        for suffix in ("out", "err"):
            path = Path(spec.log_directory) / f"{spec.job_name}-{self.job_id}.{suffix}"
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-LOG_LINES:]
                lines += [("INFO", line) for line in text]
        return lines

    def __repr__(self) -> str:
        return f"<BatchJob {self.name} {self.job_id or '(not submitted)'} alive={self.alive()}>"


class SLURMCluster(JobQueueCluster):
    """Workers in SLURM jobs: ``sbatch``, ``squeue``, ``scancel``; ``queue`` is the
    partition. See ``JobQueueCluster`` for the arguments."""

    system = SLURM


class PBSCluster(JobQueueCluster):
    """Workers in PBS Pro jobs: ``qsub``, ``qdel``. See ``JobQueueCluster``."""

    system = PBS


class SGECluster(JobQueueCluster):
    """Workers in Grid Engine jobs: ``qsub``, ``qdel``. See ``JobQueueCluster``."""

    system = SGE


class LSFCluster(JobQueueCluster):
    """Workers in LSF jobs: ``bsub``, ``bkill``; ``account`` is the project. See
    ``JobQueueCluster``."""

    system = LSF
