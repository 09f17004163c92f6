"""The seed's ``Cluster(hosts=[...], center=...)``: a scheduler and one worker per host.

Each ``host:port`` gets a ``corral worker`` listening there: a local child process for
this machine's addresses, ``ssh HOST corral worker ...`` for the others.
"""

from __future__ import annotations

import asyncio
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence

from corral import config
from corral.comm.addressing import normalize_address, parse_address
from corral.core.rpc import rpc  # the function: `corral.core.rpc` is also its module
from corral.credentials import forget, remember
from corral.deploy.lifeline import PARENT_PID_ENV, Lifeline
from corral.deploy.process import child_environment, corral_command
from corral.security import TOKEN_ENV, Security
from corral.utils import run_async

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "", "0.0.0.0"}


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host in (socket.gethostname(), socket.getfqdn())


class Cluster:
    """A scheduler at ``center`` and a worker at each of ``hosts``; ``close()`` stops them.

    ``ssh`` is the command prefix used for hosts that are not this machine, and
    ``remote_python`` the interpreter (with corral installed) to run there.
    ``always_ssh=True`` goes through ssh even for local addresses (for testing).
    """

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
    ) -> None:
        self.ssh = list(ssh)
        self.remote_python = remote_python
        self.always_ssh = always_ssh
        self.center = normalize_address(center)
        self.hosts = [normalize_address(h) for h in hosts]
        self.security = Security.generate() if security is None else security
        self.processes: list[subprocess.Popen[bytes]] = []
        self._lifelines: list[Lifeline] = []  # local children die with this process
        env = child_environment(self.security)
        remember(self.center, self.security)  # so ``Pool(center)`` here finds the token
        try:
            c = parse_address(self.center)
            self._spawn(c.host, ["scheduler", "--host", c.host, "--port", str(c.port)], env)
            for address in self.hosts:
                h = parse_address(address)
                args = ["worker", self.center, "--host", h.host, "--port", str(h.port)]
                if nthreads:
                    args += ["--nthreads", str(nthreads)]
                self._spawn(h.host, args, env)
            run_async(self._wait_for_workers())
        except BaseException:
            self.close()
            raise

    @property
    def scheduler_address(self) -> str:
        """The scheduler's address (``center``): what ``Client(cluster)`` connects to."""
        return self.center

    def _spawn(self, host: str, args: list[str], env: dict[str, str]) -> None:
        remote = self.always_ssh or not is_local(host)
        lifeline = None
        if not remote:
            command = corral_command(*args)
            lifeline = Lifeline()  # (PDEATHSIG too when called from the main thread)
            self._lifelines.append(lifeline)
            env = {**env, **lifeline.environment()}
        else:
            # The token is read from stdin on the far side, never put on a command line;
            # the process exits when its ssh session (its parent there) goes away.
            line = " ".join(shlex.quote(a) for a in [self.remote_python, "-m", "corral.cli", *args])
            token = f'{TOKEN_ENV}="$(cat)" ' if self.security and self.security.token else ""
            command = [*self.ssh, host, f"{token}{PARENT_PID_ENV}=$PPID exec {line}"]
        try:
            process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                       pass_fds=lifeline.pass_fds if lifeline else ())
        finally:
            if lifeline is not None:
                lifeline.spawned()
        assert process.stdin is not None
        if remote and self.security and self.security.token:
            process.stdin.write(self.security.token.encode())
        process.stdin.close()
        self.processes.append(process)

    async def _wait_for_workers(self) -> None:
        timeout = config.get("deploy.startup-timeout")
        deadline = time.monotonic() + timeout
        async with rpc(self.center, security=self.security, timeout=timeout) as r:
            while len(await r.nthreads()) < len(self.hosts):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers did not all join {self.center} in time")
                if any(p.poll() is not None for p in self.processes):
                    raise RuntimeError("a scheduler or worker process exited during startup")
                await asyncio.sleep(0.05)

    def close(self) -> None:
        forget(self.center)
        for process in reversed(self.processes):  # workers first, then the scheduler
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        for lifeline in self._lifelines:
            lifeline.cut()
        self._lifelines.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
