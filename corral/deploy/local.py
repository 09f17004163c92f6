"""``LocalCluster``: a scheduler and workers on this machine.

The scheduler runs in this process (on a background loop for synchronous use);
workers are child processes (``processes=True``), each under a nanny that restarts it
unless ``nanny=False``, or live on the scheduler's own loop (``processes=False``, fast
to start, for tests and small jobs).
"""

from __future__ import annotations

import asyncio
import atexit
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from corral import config
from corral.credentials import forget, remember
from corral.deploy.dashboard import attach_dashboard
from corral.deploy.process import WorkerProcess, child_environment, worker_command
from corral.memory_limit import configured_thresholds, parse_memory_limit
from corral.scheduler import Scheduler
from corral.security import Security, scheme_for
from corral.utils import LoopRunner, close_at_exit
from corral.worker import Worker
from corral.worker.memory import Thresholds

if TYPE_CHECKING:
    from corral.dashboard.app import Dashboard


class LocalCluster:
    """A scheduler in this process and ``n_workers`` workers on this machine.

    Each worker has ``threads_per_worker`` threads, ``memory_limit`` bytes (``"4GiB"``,
    ``1e9``, a fraction of system memory such as ``0.5``, ``"auto"``: system memory
    shared among the workers, the default; None or 0: no limit),
    with the fractions of it where data spills, the worker pauses and its nanny restarts it
    in ``memory_thresholds`` (``{"target": 0.6, "spill": 0.7, "pause": 0.8, "terminate":
    0.95}``, the configured ``worker.memory.*``; see docs/memory.md), the abstract
    ``resources`` given (``{"GPU": 1}``) and a scratch directory under
    ``local_directory``. ``worker_options`` are extra ``corral worker`` flags; other
    keyword arguments configure the ``Scheduler``.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        dashboard_address: str | None = ":8787",
        security: Security | None = None,
        *,
        asynchronous: bool = False,
        host: str = "127.0.0.1",
        scheduler_port: int = 0,
        nanny: bool = True,
        memory_limit: int | float | str | None = "auto",
        memory_thresholds: Thresholds | Mapping[str, Any] | None = None,
        resources: dict[str, float] | None = None,
        local_directory: str | None = None,
        worker_options: Sequence[str] = (),
        **scheduler_options: Any,
    ) -> None:
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
        # Authenticated by default: a fresh token the user never has to see or pass on.
        self.security = Security.generate() if security is None else security
        self.host = host
        # The dashboard ("host:port", ":port"; None: none) is attached once listening.
        self.dashboard_address = dashboard_address
        self._dashboard_allowed_hosts = tuple(scheduler_options.pop("dashboard_allowed_hosts", ()))
        self.dashboard: Dashboard | None = None
        self.scheduler = Scheduler(security=self.security, **scheduler_options)
        self._scheduler_port = scheduler_port
        self.workers: dict[str, WorkerProcess | Worker] = {}
        self._names = iter(range(1_000_000))
        self._asynchronous = asynchronous
        self._runner: LoopRunner | None = None
        self._owns_runner = True  # False: a synchronous Client's loop, which it stops
        self._closed = False
        self._started = False
        if not asynchronous:
            self._runner = LoopRunner("corral-cluster")
            try:
                self._runner.run(self._start(), timeout=config.get("deploy.startup-timeout"))
            except BaseException:
                self._runner.run(self._close())
                self._runner.stop()
                raise
            self._exit_hook = close_at_exit(self)  # after the clients made from it

    def __await__(self) -> Any:
        async def start() -> LocalCluster:
            await self._start()
            return self

        return start().__await__()

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        scheme = scheme_for(self.security)
        await self.scheduler.listen(f"{scheme}://{self.host}:{self._scheduler_port}")
        if self.dashboard_address is not None:
            self.dashboard = await attach_dashboard(self.scheduler, self.dashboard_address,
                                                    allowed_hosts=self._dashboard_allowed_hosts)
        remember(self.scheduler_address, self.security)
        try:
            await self._scale(self.n_workers)
        except BaseException:  # failed, or cancelled by Ctrl-C: leave no process behind
            for worker in self.workers.values():
                if isinstance(worker, WorkerProcess):
                    worker.terminate_now()
            raise

    @property
    def scheduler_address(self) -> str:
        return self.scheduler.address

    # -- scaling ---------------------------------------------------------------------------

    def run_on(self, runner: LoopRunner) -> None:
        """Make the ``scale`` and ``close`` of this cluster, started asynchronously on
        ``runner``'s loop, blocking calls there: what a synchronous ``Client`` does with
        the cluster it starts, so that ``client.cluster.scale(4)`` just works."""
        self._runner = runner
        self._owns_runner = False

    def scale(self, n: int) -> Any:
        """Grow or shrink to ``n`` workers (a coroutine for asynchronous clusters).

        Shrinking retires the newest workers gracefully: what only they hold, scattered
        data included, is copied to the workers that stay before they close."""
        if self._runner is None:
            return self._scale(n)
        return self._runner.run(self._scale(n), timeout=config.get("deploy.startup-timeout"))

    async def _scale(self, n: int) -> None:
        if n < 0:
            raise ValueError("cannot scale to a negative number of workers")
        for name, handle in list(self.workers.items()):  # retired, or gone for good
            if not (handle.alive() if isinstance(handle, WorkerProcess) else handle.serving):
                await _stop(self.workers.pop(name))
        if len(self.workers) > n:
            # Gracefully: their data (scattered data too) moves to the workers that stay.
            # Any the scheduler could not retire (no worker left to take the data) go anyway.
            leaving = list(self.workers)[n:]
            await self.scheduler.retire_workers(
                workers=leaving, timeout=config.get("deploy.startup-timeout"))
            await asyncio.gather(*(_stop(self.workers.pop(name)) for name in leaving))
        new = [await self._start_worker() for _ in range(n - len(self.workers))]
        await self._wait_for_workers(len(self.workers), [w for w in new if w is not None])

    async def _start_worker(self) -> WorkerProcess | Worker:
        name = str(next(self._names))
        if self.processes:
            command = worker_command(
                self.scheduler_address, nthreads=self.threads_per_worker, name=name,
                host=self.host, nanny=self.nanny, extra=self._worker_flags(),
            )
            handle: WorkerProcess | Worker = WorkerProcess(
                command, child_environment(self.security), name
            )
        else:
            handle = Worker(
                self.scheduler_address, nthreads=self.threads_per_worker, name=name,
                security=self.security, memory_limit=self.memory_limit,
                memory_thresholds=self.memory_thresholds, resources=self.resources,
                local_directory=self.local_directory,
            )
            await handle.start(f"{scheme_for(self.security)}://{self.host}:0")
        self.workers[name] = handle
        return handle

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

    async def _wait_for_workers(self, n: int, new: list[Any]) -> None:
        async with asyncio.timeout(config.get("deploy.startup-timeout")):
            while len(self.scheduler.state.workers) < n:
                dead = [w for w in new if isinstance(w, WorkerProcess) and not w.alive()]
                if dead:
                    raise RuntimeError(f"worker process {dead[0].name} exited during startup")
                await asyncio.sleep(0.01)

    # -- shutdown ---------------------------------------------------------------------------

    def close(self) -> Any:
        if self._runner is None:
            return self._close()
        if not self._owns_runner:
            if not self._closed and not self._runner.loop.is_closed():
                self._runner.run(self._close(), timeout=60)
            return None
        if not self._closed:
            atexit.unregister(self._exit_hook)
            try:
                self._runner.run(self._close(), timeout=60)
            finally:
                self._runner.stop()
        return None

    async def aclose(self) -> None:
        """Close from the cluster's own loop, however it was started."""
        await self._close()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(_stop(w) for w in self.workers.values()))
        self.workers.clear()
        if self.scheduler.server.listeners:
            forget(self.scheduler_address)
        await self.scheduler.close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> LocalCluster:
        await self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    def __repr__(self) -> str:
        kind = "processes" if self.processes else "in-process"
        return f"<LocalCluster {self.scheduler.server.listeners and self.scheduler_address} " \
               f"workers={len(self.workers)} ({kind})>"


async def _stop(worker: WorkerProcess | Worker) -> None:
    if isinstance(worker, WorkerProcess):
        await worker.stop()
    else:
        await worker.close()
