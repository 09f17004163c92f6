"""The nanny: a small process that keeps one worker process alive.

Theory of operation
-------------------
* The nanny starts ``corral worker --no-nanny`` as a child, passing its own address in
  the environment; the worker reports its address back with ``worker-started`` as soon
  as it listens (before it has reached its scheduler, which may take any time), and
  tells the scheduler which nanny it has (so ``client.restart()`` can go through it).
* Every ``check_interval`` the nanny looks at its worker: an exit it did not ask for
  (crash, ``os._exit``, SIGKILL, the OOM killer) means a restart: at once for a worker
  that had come up (as dask's nanny does: a worker killed every few seconds must come
  back every time, and a task that keeps killing workers is stopped by the scheduler's
  ``KilledWorker``), after a backoff that doubles with every consecutive death of a
  worker that never came up (a broken environment must not spin); memory above
  ``terminate_fraction`` (0.95) of ``memory_limit`` (RSS via psutil) means SIGKILL and
  a restart (the worker itself spills and pauses well before); and a worker that
  cannot answer ``identity`` within ``liveness_timeout`` (its event loop is blocked) is
  killed and restarted too.
* A worker that exits with ``RESTART_STATUS`` was retired at the end of its
  ``--lifetime`` and asked for a successor (``--lifetime-restart``): started at once.
* A worker that exits with status 0 has been told to go, and one that exits with
  ``GAVE_UP_STATUS`` has given up on its scheduler (``--death-timeout``, refused
  credentials; it said why): the nanny then exits as well, without restarting it.
* SIGINT/SIGTERM to the nanny (or its parent's death) take the worker down with it; the
  worker holds a lifeline to the nanny (``corral.deploy.lifeline``), so it goes even if
  the nanny is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

import psutil

from corral import config
from corral.core import Comm, Server, rpc
from corral.deploy.lifeline import Lifeline
from corral.deploy.process import (
    GAVE_UP_STATUS,
    NANNY_ENV,
    RESTART_STATUS,
    child_environment,
    worker_command,
)
from corral.security import Security

logger = logging.getLogger("corral.nanny")



class Nanny:
    """Starts, watches and restarts one worker process."""

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int,
        name: str = "",
        host: str = "127.0.0.1",
        worker_port: int = 0,
        memory_limit: int = 0,
        terminate_fraction: float | None = 0.95,
        security: Security | None = None,
        check_interval: float | None = None,
        liveness_interval: float | None = None,
        liveness_timeout: float | None = None,
        worker_args: tuple[str, ...] = (),
    ) -> None:
        self.scheduler_address = scheduler_address
        self.nthreads = nthreads
        self.name = name
        self.host = host
        self.worker_port = worker_port
        self.memory_limit = memory_limit
        self.terminate_fraction = terminate_fraction
        self.security = security
        # Unset knobs come from corral.config (nanny.*).
        self.check_interval: float = config.fallback(check_interval, "nanny.check-interval")
        self.liveness_interval: float = config.fallback(liveness_interval,
                                                        "nanny.liveness-interval")
        self.liveness_timeout: float = config.fallback(liveness_timeout,
                                                       "nanny.liveness-timeout")
        # The longest wait between starts of a worker that keeps dying before it is up.
        self.max_backoff: float = config.get("nanny.max-backoff")
        self.worker_args = worker_args
        self.server = Server(
            {
                "worker-started": self._worker_started,
                "restart": self.restart,
                "identity": self.identity,
            },
            security=security,
            name=name or "nanny",
            role="nanny",
        )
        self.process: asyncio.subprocess.Process | None = None
        self._lifeline: Lifeline | None = None
        self.gave_up: str | None = None  # why the worker gave up for good, if it did
        self.worker_address: str | None = None
        self.restarts = 0
        self._started = asyncio.Event()  # the current worker has reported its address
        self._closed = asyncio.Event()
        self._failed_starts = 0  # consecutive deaths before the worker came up
        self._expected_exit = False
        self._watcher: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self, address: str = "tcp://127.0.0.1:0", timeout: float = 60.0) -> None:
        await self.server.listen(address)
        await self._start_worker(timeout)
        self._watcher = asyncio.ensure_future(self._watch())
        logger.info("nanny at %s supervising worker %s (pid %s)", self.address,
                    self.worker_address, self.pid)

    async def _start_worker(self, timeout: float = 60.0) -> None:
        self._started.clear()
        self.worker_address = None
        command = worker_command(
            self.scheduler_address, nthreads=self.nthreads, name=self.name, host=self.host,
            port=self.worker_port, extra=("--memory-limit", str(self.memory_limit),
                                          *self.worker_args),
        )
        env = child_environment(self.security)
        env[NANNY_ENV] = self.address
        # Started from the loop's thread, which lives as long as this nanny: PDEATHSIG is safe.
        lifeline = self._lifeline = Lifeline(pdeathsig=True)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command, env={**env, **lifeline.environment()}, stdin=asyncio.subprocess.DEVNULL,
                pass_fds=lifeline.pass_fds,
            )
        finally:
            lifeline.spawned()
        waiter = asyncio.ensure_future(self._started.wait())
        exited = asyncio.ensure_future(self.process.wait())
        await asyncio.wait({waiter, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        exited.cancel()
        if not self._started.is_set():
            await self._kill()
            code = self.process.returncode
            raise RuntimeError(f"worker process did not start (exit code {code})")

    def _worker_started(self, comm: Comm, address: str, pid: int) -> str:
        if self.process is not None and pid == self.process.pid:
            self.worker_address = address
            self._started.set()
        return "OK"

    def identity(self, comm: Comm) -> dict[str, Any]:
        return {"type": "Nanny", "address": self.address, "worker": self.worker_address,
                "pid": os.getpid(), "worker_pid": self.pid, "restarts": self.restarts}

    async def restart(self, comm: Comm | None = None, timeout: float = 60.0) -> str:
        """Replace the worker with a fresh process (``client.restart()``)."""
        self._expected_exit = True
        try:
            await self._kill(graceful=True)
            await self._start_worker(timeout)
        finally:
            self._expected_exit = False
        return "OK"

    # -- watching ---------------------------------------------------------------------

    async def _watch(self) -> None:
        last_liveness = time.monotonic()
        while not self._closed.is_set():
            await asyncio.sleep(self.check_interval)
            if self._expected_exit or self.process is None:
                continue
            if self.process.returncode is not None:
                if self.process.returncode in (0, GAVE_UP_STATUS):
                    if self.process.returncode == GAVE_UP_STATUS:
                        self.gave_up = "the worker gave up on its scheduler"
                    logger.info("worker exited (status %d); nanny closing",
                                self.process.returncode)
                    await self.close()
                    return
                if self.process.returncode == RESTART_STATUS:
                    await self._replace("its lifetime is over (--lifetime-restart)",
                                        expected=True)
                    continue
                await self._replace(f"worker exited with status {self.process.returncode}")
                continue
            reason = self._over_memory()
            if reason is None and time.monotonic() - last_liveness > self.liveness_interval:
                last_liveness = time.monotonic()
                reason = await self._unresponsive()
            if reason is not None:
                await self._replace(reason)

    def _over_memory(self) -> str | None:
        if not self.memory_limit or not self.terminate_fraction or self.process is None:
            return None
        try:
            rss = psutil.Process(self.process.pid).memory_info().rss
        except psutil.Error:
            return None
        if rss > self.terminate_fraction * self.memory_limit:
            return (f"worker used {rss / 2**20:.0f} MiB of memory, over "
                    f"{self.terminate_fraction:g} of its limit of "
                    f"{self.memory_limit / 2**20:.0f} MiB")
        return None

    async def _unresponsive(self) -> str | None:
        if self.worker_address is None or self.process is None:
            return None
        # Raced against the worker's exit: a worker that closed its port and is exiting
        # must be seen as exited at once, not after the probe's connect retries time out.
        probe = asyncio.ensure_future(self._identity(self.worker_address))
        exited = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait({probe, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (probe, exited):
                waiter.cancel()
            await asyncio.gather(probe, exited, return_exceptions=True)
        if probe.cancelled() or probe.exception() is None:
            return None
        # A connection reset may come before the exit is reaped (a SIGKILLed worker): give
        # the exit a moment, so it is reported as an exit, with its status.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), 1.0)
        if self.process.returncode is not None:
            return None  # the watch loop reports and handles the exit
        return f"worker did not answer within {self.liveness_timeout} s ({probe.exception()!r})"

    async def _identity(self, address: str) -> None:
        async with rpc(address, security=self.security, timeout=self.liveness_timeout) as worker:
            await asyncio.wait_for(worker.identity(), self.liveness_timeout)

    async def _replace(self, reason: str, expected: bool = False) -> None:
        if self._closed.is_set():
            return
        logger.log(logging.INFO if expected else logging.WARNING, "restarting worker %s: %s",
                   self.worker_address, reason)
        await self._kill()
        if self._started.is_set():
            self._failed_starts = 0
        else:
            self._failed_starts += 1
            await asyncio.sleep(min(self.max_backoff, 0.1 * 2**self._failed_starts))
            if self._closed.is_set():
                return
        try:
            await self._start_worker()
            self.restarts += 1
        except (RuntimeError, OSError) as e:
            logger.error("could not restart the worker: %s", e)

    async def _kill(self, graceful: bool = False, timeout: float = 5.0) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._lifeline is not None:
            self._lifeline.cut()

    # -- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._watcher is not None and self._watcher is not asyncio.current_task():
            self._watcher.cancel()
        await self._kill(graceful=True)
        await self.server.close()

    async def finished(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Nanny:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
