"""Batch scripts that start corral workers: what one job asks for, and the script.

Pure: a ``JobSpec`` (cores, memory, processes, walltime, queue, account, extra
directives, set-up lines) and a ``BatchSystem`` (``corral.deploy.jobqueue.systems``)
give the text of a script; nothing here runs a command.

Theory of operation. One job runs ``processes`` corral workers (under nannies) on one
node, sharing its ``cores`` and ``memory``: each gets ``cores // processes`` threads
and ``memory // processes`` bytes. The worker finds the scheduler's address and token
in a scheduler file (``corral.credentials``: mode 0600, written atomically) whose
*path* is in the script, so neither the script, nor the batch system's copy of it, nor
any process's argv holds the token. Every job of a cluster runs the same script; a
worker's name is the job's name and the job id the batch system gives it
(``$SLURM_JOB_ID``, ...), so the cluster can tell which job a worker belongs to.

With a walltime, the workers retire themselves gracefully (``--lifetime``: their data
moves to the other workers first) a margin before the batch system would kill them,
each at a slightly different moment (``--lifetime-stagger``), so a cluster can replace
them before they are lost.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from corral.deploy.options import parse_duration
from corral.memory_limit import MIN_MEMORY_LIMIT, parse_bytes

# Set by ``corral worker`` jobs so one job's workers say which job they are.
JOB_NAME = "corral-worker"
DEATH_TIMEOUT = 60.0  # a worker whose scheduler is gone exits, ending its job


def parse_walltime(value: str | float | None) -> float | None:
    """Seconds from ``"HH:MM:SS"``, ``"HH:MM"``, ``"D-HH:MM:SS"``, ``"2h"``, ``"90m"`` or a
    number of seconds; None stays None."""
    if value is None or isinstance(value, int | float):
        if value is not None and value <= 0:
            raise ValueError(f"a walltime must be positive: {value!r}")
        return None if value is None else float(value)
    text = value.strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?", text)
    if match:
        days, first, second, third = match.groups()
        hours, minutes, seconds = (int(first), int(second), int(third)) if third is not None \
            else (int(first), int(second), 0)
        if minutes >= 60 or seconds >= 60:
            raise ValueError(f"not a walltime: {value!r} (minutes and seconds stop at 59)")
        total = float(int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds)
    else:
        try:
            total = parse_duration(text)
        except ValueError:
            raise ValueError(f"not a walltime: {value!r} (try 01:30:00, 90m or 2h)") from None
    if total <= 0:
        raise ValueError(f"a walltime must be positive: {value!r}")
    return float(total)


def hms(seconds: float, *, with_seconds: bool = True) -> str:
    """``5400`` → ``"01:30:00"`` (``"01:30"`` without seconds, rounded up to a minute)."""
    if not with_seconds:
        minutes = math.ceil(seconds / 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"
    whole = math.ceil(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def mebibytes(n: int) -> int:
    """Bytes to whole MiB, rounded up: what batch systems are asked for."""
    return max(1, math.ceil(n / 2**20))


def lifetime_for(walltime: float) -> tuple[float, float]:
    """(lifetime, stagger) for workers in a job of ``walltime`` seconds: they retire a
    margin before the end (a tenth of it, at most 5 minutes), spread over half of it."""
    margin = min(walltime * 0.1, 300.0)
    return walltime - margin, margin / 4


def replacement_time(joined_at: float, lifetime: float, stagger: float,
                     startup: float) -> float:
    """When to start the replacement of a job whose workers joined at ``joined_at`` and
    retire ``lifetime`` seconds (give or take ``stagger``) after they started, when a
    job takes about ``startup`` seconds from submission to joined workers.

    Twice the observed startup ahead of the earliest retirement (queue waits vary), so
    the new workers are there to take the leaving ones' data; never earlier than half
    of the lifetime, so a long queue wait costs at most that much overlap."""
    earliest = max(lifetime - stagger, 0.0)
    return joined_at + max(earliest - 2 * max(startup, 0.0), earliest / 2)


def _no_newline(name: str, values: Sequence[str | None]) -> None:
    """A newline in a value would start a directive or a command of its own."""
    for value in values:
        if value is not None and ("\n" in value or "\r" in value):
            raise ValueError(f"{name} may not contain a line break: {value!r}")


@dataclass(frozen=True)
class JobSpec:
    """What one job asks the batch system for, and how its workers start.

    Build it with ``JobSpec.make``, which reads sizes and durations as people write them.
    """

    cores: int
    memory: int  # bytes, for the whole job
    processes: int = 1
    walltime: float | None = None  # seconds
    queue: str | None = None
    account: str | None = None
    job_name: str = JOB_NAME
    job_extra: tuple[str, ...] = ()  # directives, without their prefix (#SBATCH ...)
    prologue: tuple[str, ...] = ()  # shell lines run before the workers start
    log_directory: str | None = None
    python: str = field(default=sys.executable)
    interface: str | None = None  # a network interface to listen on (ib0), else all
    worker_args: tuple[str, ...] = ()  # more ``corral worker`` flags
    lifetime: float | None = None  # seconds; default from the walltime
    death_timeout: float = DEATH_TIMEOUT

    @classmethod
    def make(
        cls,
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
        log_directory: str | None = None,
        python: str | None = None,
        interface: str | None = None,
        worker_args: Sequence[str] = (),
        lifetime: str | float | None = None,
        death_timeout: float = DEATH_TIMEOUT,
    ) -> JobSpec:
        """``cores=4, memory="16GiB", processes=2, walltime="01:00:00", queue="short"``.

        ``processes`` defaults to about the square root of ``cores`` (one process per
        thread up to 4 cores, as ``corral worker --nworkers auto``).
        """
        from corral.deploy.options import auto_nworkers

        if not isinstance(cores, int) or cores < 1:
            raise ValueError(f"cores must be a whole number of at least 1: {cores!r}")
        nbytes = parse_bytes(memory)
        if processes is None:
            processes = auto_nworkers(cores)[0]
        if not isinstance(processes, int) or not 1 <= processes <= cores:
            raise ValueError(f"processes must be between 1 and cores ({cores}): {processes!r}")
        if nbytes // processes < MIN_MEMORY_LIMIT:
            raise ValueError(
                f"memory={memory!r} leaves {nbytes // processes / 2**20:.0f} MiB to each of "
                f"{processes} worker process(es); each needs at least "
                f"{MIN_MEMORY_LIMIT // 2**20} MiB")
        if not re.fullmatch(r"[A-Za-z][\w.-]*", job_name):
            raise ValueError(f"a job name starts with a letter and has letters, digits, "
                             f"'.', '-' and '_' only: {job_name!r}")
        _no_newline("queue", [queue])
        _no_newline("account", [account])
        _no_newline("job_extra", list(job_extra))
        _no_newline("prologue", list(prologue))
        _no_newline("log_directory", [log_directory])
        seconds = parse_walltime(walltime)
        life = parse_walltime(lifetime) if lifetime is not None else None
        return cls(
            cores=cores, memory=nbytes, processes=processes, walltime=seconds, queue=queue,
            account=account, job_name=job_name, job_extra=tuple(job_extra),
            prologue=tuple(prologue), log_directory=log_directory,
            python=python or sys.executable, interface=interface,
            worker_args=tuple(worker_args), lifetime=life, death_timeout=death_timeout,
        )

    @property
    def threads(self) -> int:
        """Threads of each worker process."""
        return max(1, self.cores // self.processes)

    @property
    def worker_memory(self) -> int:
        """Memory limit of each worker process, in bytes."""
        return self.memory // self.processes

    def worker_lifetime(self) -> tuple[float, float] | None:
        """(lifetime, stagger) of the workers, or None when they live as long as the job."""
        if self.lifetime is not None:
            return self.lifetime, min(self.lifetime * 0.05, 60.0)
        return None if self.walltime is None else lifetime_for(self.walltime)


def worker_command(spec: JobSpec, scheduler_file: str, job_id_variable: str) -> str:
    """The shell line that runs a job's workers (``$VAR`` names the job id)."""
    args = [
        spec.python, "-P", "-m", "corral.cli", "worker", "--scheduler-file", scheduler_file,
        "--nworkers", str(spec.processes), "--nthreads", str(spec.threads),
        "--memory-limit", str(spec.worker_memory),
        "--death-timeout", f"{spec.death_timeout:g}",
    ]
    args += ["--interface", spec.interface] if spec.interface else ["--host", "0.0.0.0"]
    life = spec.worker_lifetime()
    if life is not None:
        args += ["--lifetime", f"{life[0]:g}s", "--lifetime-stagger", f"{life[1]:g}s"]
    args += spec.worker_args
    name = f'--name "{spec.job_name}-${{{job_id_variable}}}"'  # expanded by the job's shell
    return "exec " + " ".join(shlex.quote(a) for a in args) + " " + name
