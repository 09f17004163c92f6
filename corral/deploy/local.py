"""``LocalCluster``: a scheduler and workers on this machine.

The scheduler runs in this process (on a background loop for synchronous use);
workers are child processes (``processes=True``), each under a nanny that restarts it
unless ``nanny=False``, or live on the scheduler's own loop (``processes=False``, fast
to start, for tests and small jobs). Scaling, retiring, adaptive scaling and closing
are ``ClusterManager``'s (``corral.deploy.spec``); this module says what a local
worker is and how one starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from corral.deploy.options import listen_host
from corral.deploy.process import WorkerProcess, child_environment, worker_command
from corral.deploy.spec import ClusterManager, Job, WorkerSpec
from corral.memory_limit import configured_thresholds, parse_memory_limit
from corral.security import Security, scheme_for
from corral.worker.thresholds import Thresholds

if TYPE_CHECKING:  # imported when a worker is made in this process: the worker's server
    from corral.worker import Worker  # and state machine are ~25 ms a cold start need not pay


class LocalCluster(ClusterManager):
    """A scheduler in this process and ``n_workers`` workers on this machine.

    Each worker has ``threads_per_worker`` threads, ``memory_limit`` bytes (``"4GiB"``,
    ``1e9``, a fraction of system memory such as ``0.5``, ``"auto"``: system memory
    shared among the workers, the default; None or 0: no limit),
    with the fractions of it where data spills, the worker pauses and its nanny restarts it
    in ``memory_thresholds`` (``{"target": 0.6, "spill": 0.7, "pause": 0.8, "terminate":
    0.95}``, the configured ``worker.memory.*``; see docs/memory.md), the abstract
    ``resources`` given (``{"GPU": 1}``) and a scratch directory under
    ``local_directory``. The scheduler and workers listen on ``host`` (loopback by
    default; ``ip`` is dask's older name for it), or on the address of network
    ``interface`` (``"eth0"``) when one is given. ``worker_options`` are extra
    ``corral worker`` flags; other keyword arguments configure the ``Scheduler``
    (``worker_saturation``, 1.1 by default: root tasks wait on the scheduler until a
    worker has fewer than ceil(threads * it) tasks; ``inf`` sends every ready task at
    once; see docs/memory.md).
    """

    join_on_scale = True

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        dashboard_address: str | None = ":8787",
        security: Security | None = None,
        *,
        asynchronous: bool = False,
        host: str | None = None,
        ip: str | None = None,
        interface: str | None = None,
        scheduler_port: int = 0,
        nanny: bool = True,
        memory_limit: int | float | str | None = "auto",
        memory_thresholds: Thresholds | Mapping[str, Any] | None = None,
        resources: dict[str, float] | None = None,
        local_directory: str | None = None,
        worker_options: Sequence[str] = (),
        **scheduler_options: Any,
    ) -> None:
        host = listen_host(host, ip, interface)
        cores = os.cpu_count() or 1
        if n_workers is None:
            n_workers = cores if processes else 1
        if threads_per_worker is None:
            threads_per_worker = max(1, cores // max(n_workers, 1))
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        self.nanny = nanny and processes  # in-process workers have no process to restart
        # Per worker: "auto" shares this machine's memory among the workers by threads.
        self.memory_limit = parse_memory_limit(memory_limit, share=1 / max(n_workers, 1))
        if isinstance(memory_thresholds, Thresholds):
            self.memory_thresholds = memory_thresholds
        else:
            self.memory_thresholds = configured_thresholds(**(memory_thresholds or {}))
        self.resources = dict(resources or {})
        self.local_directory = local_directory
        self.worker_options = tuple(worker_options)  # extra ``corral worker`` flags
        self.worker_spec = WorkerSpec(nthreads=threads_per_worker, memory_limit=self.memory_limit)
        super().__init__(
            n_workers=n_workers, security=security, asynchronous=asynchronous, host=host,
            scheduler_port=scheduler_port, dashboard_address=dashboard_address,
            **scheduler_options,
        )

    @property
    def workers(self) -> dict[str, WorkerProcess | Worker]:
        """Each worker by name: its ``WorkerProcess``, or the in-process ``Worker``."""
        return {name: job.handle for name, job in self.jobs.items()
                if isinstance(job, _LocalJob) and job.handle is not None}

    def new_job(self, name: str) -> Job:
        return _LocalJob(name, self)

    def _worker_flags(self) -> tuple[str, ...]:
        """``corral worker`` flags for the worker options given to this cluster."""
        flags = ["--memory-limit", str(self.memory_limit)]
        for name in ("target", "spill", "pause", "terminate"):
            value = getattr(self.memory_thresholds, name)
            flags += [f"--memory-{name}-fraction", "false" if value is None else str(value)]
        if self.resources:
            flags += ["--resources", ",".join(f"{k}={v}" for k, v in self.resources.items())]
        if self.local_directory is not None:
            flags += ["--local-directory", self.local_directory]
        return (*flags, *self.worker_options)

    def __repr__(self) -> str:
        kind = "processes" if self.processes else "in-process"
        return f"<LocalCluster {self.scheduler_address or None} " \
               f"workers={len(self.jobs)} ({kind})>"


class _LocalJob(Job):
    """One worker of a ``LocalCluster``: a child process (under a nanny unless
    ``nanny=False``) or a ``Worker`` on the cluster's loop."""

    def __init__(self, name: str, cluster: LocalCluster) -> None:
        super().__init__(name)
        self.cluster = cluster
        self.handle: WorkerProcess | Worker | None = None

    async def start(self) -> None:
        c = self.cluster
        if c.processes:
            command = worker_command(
                c.scheduler_address, nthreads=c.threads_per_worker, name=self.name,
                host=c.host, nanny=c.nanny, extra=c._worker_flags(),
            )
            self.handle = WorkerProcess(command, child_environment(c.security), self.name)
        else:
            from corral.worker import Worker

            worker = self.handle = Worker(
                c.scheduler_address, nthreads=c.threads_per_worker, name=self.name,
                security=c.security, memory_limit=c.memory_limit,
                memory_thresholds=c.memory_thresholds, resources=c.resources,
                local_directory=c.local_directory,
            )
            await worker.start(f"{scheme_for(c.security)}://{c.host}:0")

    def alive(self) -> bool:
        handle = self.handle
        if isinstance(handle, WorkerProcess):
            return handle.alive()
        return handle is None or handle.serving

    def kill_now(self) -> None:
        if isinstance(self.handle, WorkerProcess):
            self.handle.terminate_now()

    async def close(self) -> None:
        if isinstance(self.handle, WorkerProcess):
            await self.handle.stop()
        elif self.handle is not None:
            await self.handle.close()
