"""Worker processes started and stopped by a deployment (LocalCluster, Cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from corral.security import Security

PARENT_PID_ENV = "CORRAL_PARENT_PID"  # a worker exits when this process is gone
NANNY_ENV = "CORRAL_NANNY"  # the address of the nanny supervising a worker process


def worker_command(
    scheduler_address: str,
    *,
    nthreads: int,
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    nanny: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """``corral worker ...``: a bare worker, or (``nanny=True``) a nanny that starts one."""
    return [
        sys.executable, "-m", "corral.cli", "--log-level", "warning", "worker", scheduler_address,
        "--nthreads", str(nthreads), "--name", name, "--host", host, "--port", str(port),
        *(() if nanny else ("--no-nanny",)), *extra,
    ]  # fmt: skip


def child_environment(security: Security | None) -> dict[str, str]:
    """Our environment plus the credentials (never argv: other local users can read that)."""
    env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid())})
    env.pop(NANNY_ENV, None)
    if security is not None:
        env.update(security.environment())
    return env


class WorkerProcess:
    """One ``corral worker`` child process."""

    def __init__(self, command: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        # Its own process group: Ctrl-C in a terminal reaches only the parent, which then
        # closes its clients before stopping the workers (no "lost the last copy").
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, process_group=0
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.alive() and loop.time() < deadline:  # noqa: ASYNC110 - a child process
            await asyncio.sleep(0.02)
        if self.alive():
            self.process.kill()
        while self.alive():  # noqa: ASYNC110 - reaped here, not on a thread: at interpreter
            await asyncio.sleep(0.02)  # exit (close_at_exit) no new thread may start

    def terminate_now(self) -> None:
        """SIGTERM to the process and its children (its own group), without waiting: what a
        start cut short (Ctrl-C, a failure) does, when nothing may be awaited any more and
        a nanny still starting would not pass the signal on to its worker."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name} pid={self.pid} alive={self.alive()}>"
