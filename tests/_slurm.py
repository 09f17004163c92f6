"""A real SLURM on this machine, started by the test itself: munged, slurmctld, slurmd.

Everything lives in one temporary directory: a fresh munge key and socket, a
``slurm.conf`` naming this host as the only node (on loopback, free ports, no cgroups,
no accounting), state, spool and logs. ``SLURM_CONF`` points sbatch, squeue, scancel
and sinfo at it. Needs root (slurmd starts jobs as their user) and Debian's
``slurm-wlm`` and ``munge`` packages (``.ci/run`` installs them); ``start_slurm``
raises ``SlurmUnavailable`` with the reason when it cannot run, for a clean skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests._helpers import free_ports

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scancel", "sinfo")
START_TIMEOUT = 30.0


class SlurmUnavailable(Exception):
    """Why a SLURM cannot be run here (a reason for pytest.skip)."""


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin", "/sbin") if (p := Path(d) / name).exists()),
        None)


def _tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return "(no log)"


def slurm_conf(directory: Path, host: str, ports: list[int], munge_socket: Path) -> str:
    """One node (this host, 4 CPUs whatever the hardware), one partition, nothing else."""
    memory = psutil.virtual_memory().total // 2**20
    return "\n".join([
        "ClusterName=corral-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={directory / 'state'}",
        f"SlurmdSpoolDir={directory / 'spool'}",
        f"SlurmctldPidFile={directory / 'slurmctld.pid'}",
        f"SlurmdPidFile={directory / 'slurmd.pid'}",
        f"SlurmctldLogFile={directory / 'slurmctld.log'}",
        f"SlurmdLogFile={directory / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SchedulerType=sched/builtin",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SlurmdParameters=config_overrides",  # 4 CPUs even on a 2-core machine
        "ReturnToService=2",
        "KillWait=5",  # seconds from SIGTERM to SIGKILL when a job is cancelled
        "MailProg=/bin/true",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory={memory} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


class Slurm:
    """A running SLURM; ``environment`` is what its commands need (``SLURM_CONF``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.conf = directory / "slurm.conf"
        self.environment = {"SLURM_CONF": str(self.conf)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.startup_seconds = 0.0

    def run(self, *command: str) -> str:
        return subprocess.run(command, env={**os.environ, **self.environment},
                              capture_output=True, text=True, timeout=30, check=True).stdout

    def jobs(self) -> list[str]:
        """Ids of the jobs squeue still lists (queued, running or completing)."""
        return self.run("squeue", "--noheader", "--format=%i").split()

    def node_state(self) -> str:
        try:
            return self.run("sinfo", "--noheader", "--format=%t").strip()
        except subprocess.CalledProcessError:
            return ""

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.directory / f"{name}.out", "wb")
        self.processes[name] = subprocess.Popen(
            [_find(name) or name, *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, **self.environment})
        log.close()

    def start(self) -> None:
        began = time.monotonic()
        d = self.directory
        for sub in ("state", "spool", "munge"):
            (d / sub).mkdir(mode=0o700)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munge_socket = d / "munge" / "munge.socket"
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(slurm_conf(d, host, free_ports(2), munge_socket))
        self._spawn("munged", "--foreground", "--force", f"--key-file={key}",
                    f"--socket={munge_socket}", f"--pid-file={d / 'munge' / 'munged.pid'}",
                    f"--seed-file={d / 'munge' / 'munged.seed'}",
                    f"--log-file={d / 'munge' / 'munged.log'}")
        self._wait(lambda: munge_socket.exists(), "munged",
                   lambda: _tail(d / "munged.out") + " " + _tail(d / "munge" / "munged.log"))
        self._spawn("slurmctld", "-D", "-c", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", host)
        self._wait(lambda: self.node_state() == "idle", "the node to be idle",
                   lambda: f"slurmctld: {_tail(d / 'slurmctld.log')}; "
                           f"slurmd: {_tail(d / 'slurmd.log')}")
        self.startup_seconds = time.monotonic() - began

    def _wait(self, ready, what: str, logs) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"no {what} in {START_TIMEOUT:g} s"
                raise SlurmUnavailable(f"SLURM did not start here: {why}: {logs()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons (slurmd first) and their children."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.run("scancel", "--user=root")
                deadline = time.monotonic() + 15
                while self.jobs() and time.monotonic() < deadline:
                    time.sleep(0.1)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            children: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(process.pid).children(recursive=True)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for child in children:  # slurmstepd of a job that did not end
                with contextlib.suppress(psutil.Error):
                    child.kill()


@contextlib.contextmanager
def running_slurm(directory: Path) -> Iterator[Slurm]:
    """A SLURM for the duration of the block; ``SlurmUnavailable`` when there can be none."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("a SLURM node daemon needs root (slurmd starts jobs as their user)")
    missing = [n for n in (*DAEMONS, *COMMANDS) if _find(n) is None]
    if missing:
        raise SlurmUnavailable(f"{', '.join(missing)} not installed (Debian's slurm-wlm and "
                               "munge packages; .ci/run installs them)")
    slurm = Slurm(directory)
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()
