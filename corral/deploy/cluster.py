"""The seed's ``Cluster(hosts=[...], center=...)``: a scheduler and one worker per host.

Each ``host:port`` gets a ``corral worker`` listening there: a local child process for
this machine's addresses, ``ssh HOST corral worker ...`` for the others. The scheduler
runs the same way at ``center``. A ``ClusterManager`` (``corral.deploy.spec``) whose
jobs are those processes: ``scale(n)`` runs workers on the first ``n`` hosts.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from corral import config
from corral.comm.addressing import normalize_address, parse_address
from corral.core.rpc import rpc  # the function: `corral.core.rpc` is also its module
from corral.deploy.lifeline import PARENT_PID_ENV, Lifeline
from corral.deploy.process import child_environment, corral_command, ended
from corral.deploy.spec import ClusterManager, Job, WorkerSpec
from corral.exceptions import CommError
from corral.security import TOKEN_ENV, Security

if TYPE_CHECKING:
    from corral.scheduler import Scheduler

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "", "0.0.0.0"}


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host in (socket.gethostname(), socket.getfqdn())


class Cluster(ClusterManager):
    """A scheduler at ``center`` and a worker at each of ``hosts``; ``close()`` stops them.

    ``ssh`` is the command prefix used for hosts that are not this machine, and
    ``remote_python`` the interpreter (with corral installed) to run there.
    ``always_ssh=True`` goes through ssh even for local addresses (for testing).
    """

    join_on_scale = True

    def __init__(
        self,
        hosts: list[str],
        center: str,
        *,
        nthreads: int | None = None,
        security: Security | None = None,
        ssh: Sequence[str] = ("ssh", "-o", "BatchMode=yes"),
        remote_python: str = "python3",
        always_ssh: bool = False,
        asynchronous: bool = False,
    ) -> None:
        self.ssh = list(ssh)
        self.remote_python = remote_python
        self.always_ssh = always_ssh
        self.center = normalize_address(center)
        self.hosts = [normalize_address(h) for h in hosts]
        self.nthreads = nthreads
        self.worker_spec = WorkerSpec(nthreads=nthreads or os.cpu_count() or 1)
        self._scheduler_job: _Process | None = None
        super().__init__(n_workers=len(self.hosts), security=security,
                         asynchronous=asynchronous)

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The scheduler's process (or its ssh session), then each worker's."""
        jobs = [self._scheduler_job, *self.jobs.values()]
        return [j.process for j in jobs if isinstance(j, _Process) and j.process is not None]

    # -- the scheduler, a process of its own -------------------------------------------------

    def _new_scheduler(self, **options: Any) -> Scheduler | None:
        return None

    async def _start_scheduler(self) -> str:
        c = parse_address(self.center)
        job = self._scheduler_job = _Process(
            "scheduler", self, c.host, ["scheduler", "--host", c.host, "--port", str(c.port)])
        await job.start()
        timeout = config.get("deploy.startup-timeout")
        async with asyncio.timeout(timeout), rpc(self.center, security=self.security) as r:
            while True:
                if not job.alive():
                    raise RuntimeError(f"the scheduler at {self.center} exited during startup")
                try:
                    await r.identity()
                    return self.center
                except (CommError, OSError):
                    await asyncio.sleep(0.05)

    async def _close_scheduler(self) -> None:
        if self._scheduler_job is not None:
            await self._scheduler_job.close()

    # -- workers ---------------------------------------------------------------------------

    def new_job(self, name: str) -> Job:
        free = [h for h in self.hosts if h not in self.jobs]
        if not free:
            raise ValueError(f"this cluster has {len(self.hosts)} hosts, each running a worker")
        h = parse_address(free[0])
        args = ["worker", self.center, "--host", h.host, "--port", str(h.port),
                "--name", free[0]]
        if self.nthreads:
            args += ["--nthreads", str(self.nthreads)]
        return _Process(free[0], self, h.host, args)


class _Process(Job):
    """``corral ARGS...`` on ``host``: a child process here, or an ssh session there."""

    def __init__(self, name: str, cluster: Cluster, host: str, args: list[str]) -> None:
        super().__init__(name)
        self.cluster = cluster
        self.host = host
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.lifeline: Lifeline | None = None  # a local child dies with this process

    async def start(self) -> None:
        self._spawn()  # a fork and a pipe write: quick enough for the loop

    def _spawn(self) -> None:
        c = self.cluster
        env = child_environment(c.security)
        remote = c.always_ssh or not is_local(self.host)
        token = c.security.token if c.security else None
        lifeline = None
        if not remote:
            command = corral_command(*self.args)
            lifeline = self.lifeline = Lifeline()
            env = {**env, **lifeline.environment()}
        else:
            # The token is read from stdin on the far side, never put on a command line;
            # the process exits when its ssh session (its parent there) goes away.
            line = " ".join(shlex.quote(a)
                            for a in [c.remote_python, "-m", "corral.cli", *self.args])
            prefix = f'{TOKEN_ENV}="$(cat)" ' if token else ""
            command = [*c.ssh, self.host, f"{prefix}{PARENT_PID_ENV}=$PPID exec {line}"]
        try:
            process = self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.PIPE,
                pass_fds=lifeline.pass_fds if lifeline else ())
        finally:
            if lifeline is not None:
                lifeline.spawned()
        assert process.stdin is not None
        if remote and token:
            process.stdin.write(token.encode())
        process.stdin.close()

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def kill_now(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    async def close(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.terminate()
            if not await ended(process, timeout):
                process.kill()
                await ended(process)
        if self.lifeline is not None:
            self.lifeline.cut()
