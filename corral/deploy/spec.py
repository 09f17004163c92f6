"""``ClusterManager``: the one base of every way corral gets workers.

Theory of operation
-------------------
* A manager runs a scheduler (by default in this process, listening on ``host``) and
  a set of **jobs**: a ``Job`` is what it starts to bring workers (a child process, a
  worker on this loop, an ``ssh`` session, a batch job). A job starts, may end by
  itself (``alive()``), and is closed; it brings ``worker_spec.processes`` workers,
  named after it (``"3"``, or ``"3-0"``, ``"3-1"``, ... for several). A subclass says
  what a worker is (``worker_spec``: threads and memory each, workers per job) and how
  to make a job (``new_job(name)``); the base does the rest.
* ``scale(n)`` (or ``cores=``, ``memory=``: the jobs that many take) starts jobs, or
  stops the jobs not joined yet and then the newest ones. Stopping is graceful: the
  scheduler retires their workers first (``retire_workers``: what only they hold,
  scattered data included, is copied to workers that stay), then the jobs close. An
  explicit ``scale`` closes them even when retirement failed; adaptive scaling
  (``adapt``) closes only the jobs whose workers all retired, so no data still needed
  is ever lost to it.
* One async core, one sync facade: every public method of a manager started with
  ``asynchronous=True`` returns a coroutine; otherwise the manager runs its loop in a
  background thread (or a synchronous client's, ``run_on``) and the method blocks.
* The manager talks to its scheduler only through ``rpc`` (retire, workload, logs), so
  the same code serves a scheduler in this process or one started elsewhere.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from corral import config
from corral.core.rpc import rpc
from corral.credentials import forget, remember
from corral.scheduler.workload import Workload
from corral.security import Security, scheme_for
from corral.utils import LoopRunner, close_at_exit, parse_bytes

if TYPE_CHECKING:
    from corral.deploy.adapt_loop import Adaptive
    from corral.deploy.dashboard import OnDemandDashboard
    from corral.scheduler import Scheduler

logger = logging.getLogger("corral.deploy")
T = TypeVar("T")


class Status(Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one job brings: ``processes`` workers of ``nthreads`` threads and
    ``memory_limit`` bytes each (0: not known; ``scale(memory=...)`` needs it)."""

    nthreads: int = 1
    memory_limit: int = 0
    processes: int = 1


class Job:
    """Something a manager starts to bring workers, and stops. Subclasses implement
    ``start`` (return once launched; joining is the manager's to wait for) and
    ``close`` (stop for good; the manager retired its workers first)."""

    def __init__(self, name: str, *, processes: int = 1) -> None:
        self.name = name
        self.processes = processes
        # True once it is about to end by itself (a batch job near its walltime) and a
        # replacement may start: the manager counts it no more, and closes it once ended.
        self.leaving = False

    @property
    def worker_names(self) -> tuple[str, ...]:
        """The names its workers join with (``corral worker --name NAME --nworkers N``)."""
        if self.processes == 1:
            return (self.name,)
        return tuple(f"{self.name}-{i}" for i in range(self.processes))

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        """False once it has ended by itself (its process exited, its batch job ended)."""
        return True

    def kill_now(self) -> None:
        """Stop at once, without awaiting: a start cut short (Ctrl-C) calls this."""

    def logs(self) -> list[tuple[str, str]]:
        """Its own output, as ``(level, line)``, if it keeps any (a batch job's file)."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} alive={self.alive()}>"


class ClusterManager:
    """A scheduler and the jobs that bring its workers; see the module's docstring.

    Subclasses set their own attributes, then call ``super().__init__(...)``: a
    synchronous manager starts there.
    """

    worker_spec = WorkerSpec()
    join_on_scale = False  # scale() returns once the workers it started joined

    def __init__(
        self,
        *,
        n_workers: int = 0,
        security: Security | None = None,
        asynchronous: bool = False,
        host: str = "127.0.0.1",
        scheduler_port: int = 0,
        dashboard_address: str | None = None,
        **scheduler_options: Any,
    ) -> None:
        # Authenticated by default: a fresh token the user never has to see or pass on.
        self.security = Security.generate() if security is None else security
        self.host = host
        self.dashboard_address = dashboard_address  # "host:port", ":port"; None: none
        self._dashboard_allowed_hosts = tuple(scheduler_options.pop("dashboard_allowed_hosts", ()))
        self.dashboard: OnDemandDashboard | None = None
        self._scheduler_port = scheduler_port
        self.scheduler: Scheduler | None = self._new_scheduler(**scheduler_options)
        self._scheduler_address = ""
        self.jobs: dict[str, Job] = {}
        self.status = Status.CREATED
        self.adaptive: Adaptive | None = None
        self._initial_workers = n_workers
        self._names = iter(range(1_000_000_000))
        self._lock: asyncio.Lock | None = None  # made on the loop
        self._rpc: rpc | None = None
        self._events: deque[tuple[str, str]] = deque(maxlen=1000)
        self._closing: set[asyncio.Future[Any]] = set()  # jobs stopped, still closing
        self._asynchronous = asynchronous
        self._runner: LoopRunner | None = None
        self._owns_runner = True  # False: run on by a synchronous Client, which releases it
        if not asynchronous:
            self._runner = LoopRunner.shared()
            try:
                self._runner.run(self._start(), timeout=config.get("deploy.startup-timeout"))
            except BaseException:
                self._runner.run(self._close())
                self._runner.release()
                raise
            self._exit_hook = close_at_exit(self)  # after the clients made from it

    # -- what a subclass provides ------------------------------------------------------------

    def new_job(self, name: str) -> Job:
        """The job to start next, named ``name``."""
        raise NotImplementedError(f"{type(self).__name__} cannot start workers")

    def _new_scheduler(self, **options: Any) -> Scheduler | None:
        """The scheduler to run in this process (None: ``_start_scheduler`` starts one
        elsewhere)."""
        from corral.scheduler import Scheduler

        return Scheduler(security=self.security, **options)

    async def _start_scheduler(self) -> str:
        """Start the scheduler; its address."""
        assert self.scheduler is not None
        await self.scheduler.listen(f"{scheme_for(self.security)}://{self.host}:"
                                    f"{self._scheduler_port}")
        return self.scheduler.address

    async def _start_dashboard(self) -> None:
        """Serve the dashboard beside a scheduler in this process, if one is wanted."""
        if self.scheduler is None or self.dashboard_address is None:
            return
        from corral.deploy.dashboard import attach_dashboard

        self.dashboard = await attach_dashboard(self.scheduler, self.dashboard_address,
                                                allowed_hosts=self._dashboard_allowed_hosts)

    async def _close_scheduler(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.close()

    # -- lifecycle -----------------------------------------------------------------------

    def __await__(self) -> Any:
        async def start() -> Any:
            await self._start()
            return self

        return start().__await__()

    async def _start(self) -> None:
        if self.status != Status.CREATED:
            return
        self.status = Status.STARTING
        self._lock = asyncio.Lock()
        try:
            self._scheduler_address = await self._start_scheduler()
            remember(self._scheduler_address, self.security)
            self._rpc = rpc(self._scheduler_address, security=self.security,
                            timeout=config.get("deploy.startup-timeout"), name="cluster")
            self._log(f"scheduler at {self._scheduler_address}")
            await self._start_dashboard()  # its sockets: it loads on its first connection
            await self._scale(self._initial_workers)
        except BaseException:  # failed, or cancelled by Ctrl-C: leave no process behind
            self.status = Status.FAILED
            for job in self.jobs.values():
                job.kill_now()
            raise
        self.status = Status.RUNNING

    @property
    def scheduler_address(self) -> str:
        return self._scheduler_address

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's address for a browser (None without a dashboard); with a token it
        logs the browser in, so it is as secret as the token."""
        from corral.dashboard.access import login_link

        return None if self.dashboard is None else login_link(self.dashboard.url, self.security)

    @property
    def asynchronous(self) -> bool:
        return self._asynchronous

    def get_client(self) -> Any:
        """A client of this cluster: an ``AsyncClient`` to await if it is asynchronous."""
        from corral.client.sync import Client

        return Client(self, asynchronous=self._asynchronous)

    @property
    def workers(self) -> dict[str, Any]:
        """The jobs running, by name."""
        return self.jobs

    @property
    def planned(self) -> list[str]:
        """The names of every worker started or asked for, oldest first: those of the
        jobs still alive (one that ended by itself is replaced by the next ``scale``) and
        not ``leaving``."""
        return [name for job in self.jobs.values() if job.alive() and not job.leaving
                for name in job.worker_names]

    def run_on(self, runner: LoopRunner) -> None:
        """Make the methods of this manager, started asynchronously on ``runner``'s loop,
        blocking calls there: what a synchronous ``Client`` does with the cluster it
        starts, so that ``client.cluster.scale(4)`` just works."""
        self._runner = runner
        self._owns_runner = False

    def _sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> Any:
        if self._runner is None:
            return coro
        return self._runner.run(coro, timeout=timeout)

    # -- scaling -------------------------------------------------------------------------

    def scale(self, n: int | None = None, *, cores: int | None = None,
              memory: int | str | None = None) -> Any:
        """Grow or shrink to ``n`` workers, or to as many as give ``cores`` threads or
        ``memory`` bytes (``"64GiB"``); stops adaptive scaling.

        Shrinking retires workers gracefully: what only they hold is copied to the
        workers that stay before they close."""
        count = self._count(n, cores, memory)
        return self._sync(self._scale_by_hand(count), config.get("deploy.startup-timeout"))

    def _count(self, n: int | None, cores: int | None, memory: int | str | None) -> int:
        spec = self.worker_spec
        count = 0 if n is None else n
        if count < 0:
            raise ValueError("cannot scale to a negative number of workers")
        if cores is not None:
            count = max(count, math.ceil(cores / spec.nthreads))
        if memory is not None:
            if not spec.memory_limit:
                raise ValueError(f"{type(self).__name__}'s workers have no memory limit: "
                                 "scale by n or cores")
            count = max(count, math.ceil(parse_bytes(memory) / spec.memory_limit))
        return count

    async def _scale_by_hand(self, n: int) -> None:
        from corral.deploy.adapt_loop import stop_and_wait

        if self.adaptive is not None:
            await stop_and_wait(self.adaptive)
            self.adaptive = None
        await self._scale(n)

    async def _scale(self, n: int, *, force: bool = True) -> None:
        """Run the jobs that bring ``n`` workers (rounded up to whole jobs)."""
        if n < 0:
            raise ValueError("cannot scale to a negative number of workers")
        assert self._lock is not None
        async with self._lock:
            for name, job in list(self.jobs.items()):  # retired, or ended by itself
                if not job.alive():
                    await self._close_job(self.jobs.pop(name))
            wanted = math.ceil(n / max(1, self.worker_spec.processes))
            counted = [j for j in self.jobs.values() if not j.leaving]
            if len(counted) > wanted:
                joined = await self._joined()
                # Those still starting first (nothing to move), then the newest; shrunk by
                # hand, those leaving by themselves (already replaced) go along.
                by_age = counted[::-1]
                going = sorted(by_age, key=lambda j: any(w in joined for w in j.worker_names))
                going = going[:len(counted) - wanted]
                if force:
                    going += [j for j in self.jobs.values() if j.leaving]
                await self._stop_jobs(going, force=force)
                counted = [j for j in self.jobs.values() if not j.leaving]
            if len(counted) < wanted and self.status not in (Status.CLOSING, Status.CLOSED):
                new = []
                for _ in range(wanted - len(counted)):
                    job = self.new_job(str(next(self._names)))
                    self.jobs[job.name] = job  # before start: a failed start closes it too
                    await job.start()
                    new.append(job)
                self._log(f"started {', '.join(j.name for j in new)}: {len(self.jobs)} jobs")
                if self.join_on_scale:
                    await self._wait_for_jobs(new)

    async def _retire(self, names: Sequence[str]) -> None:
        """Stop the jobs all of whose workers are among ``names`` (adaptive scaling)."""
        assert self._lock is not None
        wanted = set(names)
        async with self._lock:
            jobs = [j for j in self.jobs.values() if set(j.worker_names) <= wanted]
            await self._stop_jobs(jobs, force=False)

    async def _stop_jobs(self, jobs: list[Job], *, force: bool) -> None:
        if not jobs:
            return
        joined = await self._joined()
        names = [w for job in jobs for w in job.worker_names if w in joined]
        retired: set[str] = set()
        if names:
            assert self._rpc is not None
            done = await self._rpc.retire_workers(
                workers=names, timeout=config.get("deploy.startup-timeout"))
            retired = {info["name"] for info in done.values()}
        closing = [j for j in jobs if force or all(
            w in retired or w not in joined for w in j.worker_names)]
        for job in closing:
            del self.jobs[job.name]
        # Shielded: a cancelled caller (adaptive scaling stopped by close()) leaves none
        # half-closed; close() waits for these before it stops the scheduler.
        closes = asyncio.ensure_future(asyncio.gather(*(self._close_job(j) for j in closing)))
        self._closing.add(closes)
        closes.add_done_callback(self._closing.discard)
        await asyncio.shield(closes)
        kept = [j.name for j in jobs if j not in closing]
        self._log(f"stopped {', '.join(j.name for j in closing) or 'none'}"
                  + (f"; kept {', '.join(kept)} (their data could not move)" if kept else ""))

    async def _close_job(self, job: Job) -> None:
        try:
            await job.close()
        except Exception as e:  # one clear line: the others still close
            logger.warning("closing %s failed: %s: %s", job, type(e).__name__, e)

    async def _joined(self) -> dict[str, str]:
        """``{worker name: address}`` of the workers the scheduler has."""
        if self.scheduler is not None:
            return {ws.name: a for a, ws in self.scheduler.state.workers.items()}
        assert self._rpc is not None
        info = await self._rpc.scheduler_info()
        return {w["name"]: a for a, w in info["workers"].items()}

    async def _wait_for_jobs(self, jobs: list[Job]) -> None:
        names = {w for job in jobs for w in job.worker_names}
        async with asyncio.timeout(config.get("deploy.startup-timeout")):
            while not names <= (await self._joined()).keys():
                dead = [job for job in jobs if not job.alive()]
                if dead:
                    raise RuntimeError(f"worker {dead[0].name} exited during startup")
                await asyncio.sleep(0.01)

    def wait_for_workers(self, n: int, timeout: float | None = None) -> Any:
        """Return once ``n`` workers have joined (``TimeoutError`` after ``timeout``)."""
        return self._sync(self._wait_for_workers(n, timeout))

    async def _wait_for_workers(self, n: int, timeout: float | None) -> None:
        async with asyncio.timeout(timeout):
            while len(await self._joined()) < n:  # noqa: ASYNC110 - a remote count
                await asyncio.sleep(0.05)

    # -- adaptive scaling ----------------------------------------------------------------

    def adapt(
        self,
        minimum: int | None = None,
        maximum: float | None = None,
        *,
        target_duration: float | None = None,
        wait_count: int | None = None,
        interval: float | None = None,
        minimum_memory: int | str | None = None,
        maximum_memory: int | str | None = None,
    ) -> Adaptive:
        """Grow and shrink with the work, between ``minimum`` and ``maximum`` workers
        (or workers enough for ``minimum_memory`` / within ``maximum_memory``); see
        ``corral.deploy.adaptive``. Unset values come from ``deploy.adaptive.*``.
        Replaces any earlier ``adapt``; ``scale(n)`` stops it."""
        from corral.deploy.adapt_loop import Adaptive
        from corral.deploy.adaptive import AdaptOptions

        def knob(given: Any, key: str) -> Any:
            return config.fallback(given, f"deploy.adaptive.{key}")

        most = knob(maximum, "maximum")
        low, high = int(knob(minimum, "minimum")), math.inf if most is None else float(most)
        if minimum_memory is not None:
            low = max(low, self._count(None, None, minimum_memory))
        if maximum_memory is not None:
            self._count(None, None, maximum_memory)  # refuses workers of unknown memory
            high = min(high, parse_bytes(maximum_memory) // self.worker_spec.memory_limit)
        options = AdaptOptions(
            minimum=low, maximum=high, target_duration=float(knob(target_duration,
                                                                  "target-duration")),
            wait_count=int(knob(wait_count, "wait-count")),
        )
        adaptive = Adaptive(self, options, interval=float(knob(interval, "interval")))
        previous, self.adaptive = self.adaptive, adaptive
        if previous is not None:
            previous.stop()
        if self._runner is not None:
            self._runner.call_soon(adaptive.start)
        else:
            adaptive.start()
        return adaptive

    async def _workload(self, after: int | None = None, timeout: float = 0.0) -> Workload:
        """The scheduler's workload; with ``after``, once a graph newer than that arrived
        or ``timeout`` seconds passed."""
        assert self._rpc is not None
        return Workload.from_wire(await self._rpc.workload(after=after, timeout=timeout))

    # -- status and logs -----------------------------------------------------------------

    def _log(self, message: str, level: str = "INFO") -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._events.append((level, f"{stamp} - {type(self).__name__} - {message}"))
        logger.debug("%s", message)

    def get_logs(self, cluster: bool = True, workers: bool = True) -> Any:
        """``{"cluster": [(level, line), ...], worker address: [...], "job NAME": [...]}``:
        what the manager did, each worker's recent log, each job's own output."""
        return self._sync(self._get_logs(cluster, workers), timeout=60)

    async def _get_logs(self, cluster: bool, workers: bool) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        if cluster:
            out["cluster"] = list(self._events)
        if workers and self._rpc is not None:
            out.update({a: [(str(x[0]), str(x[1])) for x in lines]
                        for a, lines in (await self._rpc.worker_logs()).items()
                        if isinstance(lines, list)})
            out.update({f"job {j.name}": j.logs() for j in self.jobs.values() if j.logs()})
        return out

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> Any:
        if self._runner is None:
            return self._close()
        if not self._owns_runner:
            if self.status != Status.CLOSED and not self._runner.loop.is_closed():
                self._runner.run(self._close(), timeout=60)
            return None
        if self.status != Status.CLOSED:
            atexit.unregister(self._exit_hook)
            try:
                self._runner.run(self._close(), timeout=60)
            finally:
                self._runner.release()
        return None

    async def aclose(self) -> None:
        """Close from the manager's own loop, however it was started."""
        await self._close()

    async def _close(self) -> None:
        if self.status in (Status.CLOSING, Status.CLOSED):
            return
        from corral.deploy.adapt_loop import stop_and_wait

        self.status = Status.CLOSING
        if self.adaptive is not None:
            await stop_and_wait(self.adaptive)
        jobs = list(self.jobs.values())
        self.jobs.clear()
        await asyncio.gather(*(self._close_job(job) for job in jobs), *self._closing)
        if self._scheduler_address:
            forget(self._scheduler_address)
        if self._rpc is not None:
            with contextlib.suppress(Exception):
                await self._rpc.close_rpc()
        await self._close_scheduler()
        self.status = Status.CLOSED

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        await self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self._scheduler_address or '(not started)'} "
                f"workers={len(self.planned)} {self.status.value}>")
