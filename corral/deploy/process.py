"""Worker processes started and stopped by a deployment (LocalCluster, Cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from corral import config
from corral.deploy.lifeline import LIFELINE_ENV, PARENT_PID_ENV, Lifeline
from corral.security import Security

NANNY_ENV = "CORRAL_NANNY"  # the address of the nanny supervising a worker process
SYS_PATH_ENV = "CORRAL_SYS_PATH"  # the parent's sys.path, for the child to import from
# A worker that gave up on its scheduler (--death-timeout, refused credentials) exits with
# this (sysexits' EX_UNAVAILABLE): its nanny does not restart it but exits with it.
GAVE_UP_STATUS = 69
# A worker whose --lifetime is over and that was started with --lifetime-restart exits
# with this (sysexits' EX_TEMPFAIL) once retired: its nanny starts a fresh one at once.
RESTART_STATUS = 75

# ``python -m`` would put the current directory first on sys.path: any ``corral`` folder
# there (the clone's parent, a checkout of another version) would shadow the real one.
# Instead the child starts with no such entry (-P) and takes its parent's sys.path, so it
# imports exactly the corral (and the user's modules) its parent does, as multiprocessing
# does for its children; the variable is removed so the child's own children start clean.
_BOOTSTRAP = (
    "import os, sys; "
    f"sys.path[:] = os.environ.pop({SYS_PATH_ENV!r}).split(os.pathsep); "
    "from corral.cli import main; main(prog_name='corral')"
)


def corral_command(*args: str) -> list[str]:
    """``corral ARGS...`` run by this interpreter, importing from this process's sys.path."""
    return [sys.executable, "-P", "-c", _BOOTSTRAP, *args]


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
    return corral_command(
        "--log-level", "warning", "worker", scheduler_address,
        "--nthreads", str(nthreads), "--name", name, "--host", host, "--port", str(port),
        *(() if nanny else ("--no-nanny",)), *extra,
    )  # fmt: skip


def child_environment(security: Security | None) -> dict[str, str]:
    """Our environment plus the credentials (never argv: other local users can read that)
    and our settings (``corral.config``, what ``config.set`` changed included)."""
    env = dict(os.environ)
    env.update(config.inherited_environment())
    for name in (NANNY_ENV, PARENT_PID_ENV, LIFELINE_ENV):
        env.pop(name, None)
    cwd = os.getcwd()
    env[SYS_PATH_ENV] = os.pathsep.join(p or cwd for p in sys.path)  # '' is the cwd
    if security is not None:
        env.update(security.environment())
    # glibc keeps freed memory of large arrays in its heap (its mmap threshold grows with
    # every large free), so a worker that spilled would still look full: return it.
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "65536")
    return env


class WorkerProcess:
    """One ``corral worker`` child process, which dies with this process."""

    def __init__(self, command: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        # Started from the event loop's thread, which outlives it: PDEATHSIG is safe.
        # Its own process group: Ctrl-C in a terminal reaches only the parent, which then
        # closes its clients before stopping the workers (no "lost the last copy").
        self.lifeline = Lifeline(pdeathsig=True)
        try:
            self.process = subprocess.Popen(
                command, env={**env, **self.lifeline.environment()}, stdin=subprocess.DEVNULL,
                pass_fds=self.lifeline.pass_fds, process_group=0,
            )
        except BaseException:
            self.lifeline.cut()
            raise
        self.lifeline.spawned()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            if not await ended(self.process, timeout):
                self.process.kill()
                await ended(self.process)
        self.lifeline.cut()

    def terminate_now(self) -> None:
        """SIGTERM to the process and its children (its own group), without waiting: what a
        start cut short (Ctrl-C, a failure) does, when nothing may be awaited any more and
        a nanny still starting would not pass the signal on to its worker."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name} pid={self.pid} alive={self.alive()}>"


async def ended(process: subprocess.Popen[bytes], timeout: float | None = None) -> bool:
    """Wait at most ``timeout`` seconds (None: as long as it takes) for ``process`` to
    exit, and reap it; whether it has. The loop wakes when it exits, through a pidfd
    (Linux 5.3 and later); elsewhere it looks every 20 ms. Reaped here, not on a thread:
    at interpreter exit (``close_at_exit``) no new thread may start."""
    if process.poll() is not None:
        return True
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfds here
        pidfd = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            if pidfd is None:
                while process.poll() is None:  # noqa: ASYNC110 - no pidfd to wait on
                    await asyncio.sleep(0.02)
            else:
                exited: asyncio.Future[None] = loop.create_future()

                def wake() -> None:  # readable once, and for good, when it exits
                    if not exited.done():
                        exited.set_result(None)

                loop.add_reader(pidfd, wake)
                try:
                    await exited
                finally:
                    loop.remove_reader(pidfd)
                    os.close(pidfd)
    return process.poll() is not None
