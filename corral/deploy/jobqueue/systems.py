"""The four batch systems: their directives, and the commands that submit, list and cancel.

Each directive is the documented one (``man sbatch``, PBS Pro's ``qsub``, Grid Engine's
``qsub``/``complex``, LSF's ``bsub``); sizes are whole MiB rounded up, which each system
reads as binary units (SLURM ``M``, PBS ``mb``, SGE ``M``, LSF ``MB``), and walltimes
``HH:MM:SS`` (LSF: ``HH:MM``). Pure data and functions: nothing here runs a command.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from corral.deploy.jobqueue.script import JobSpec, hms, mebibytes, worker_command

SHEBANG = "#!/usr/bin/env bash"


@dataclass(frozen=True)
class BatchSystem:
    """How one batch system is spoken to."""

    name: str  # "slurm"
    prefix: str  # "#SBATCH": what starts each directive line
    job_id_variable: str  # the job's id inside the job: SLURM_JOB_ID
    submit: tuple[str, ...]  # the command that submits a script (its path appended)
    submit_on_stdin: bool  # give the script on standard input instead (bsub < script)
    cancel: tuple[str, ...]  # the command that cancels jobs (their ids appended)
    # Lists this user's jobs still queued or running, one id first on each line
    # ("{user}" is replaced). None: the system's jobs are tracked by their workers alone.
    status: tuple[str, ...] | None
    job_id_pattern: str  # finds the id in what ``submit`` printed
    resources: Callable[[JobSpec], list[str]]  # directives (without prefix) for a spec

    def directives(self, spec: JobSpec) -> list[str]:
        """Every directive line of a job: name, queue, account, resources, logs, extras."""
        return [f"{self.prefix} {d}" for d in (*self.resources(spec), *spec.job_extra)]

    def job_script(self, spec: JobSpec, scheduler_file: str) -> str:
        """The whole script: directives first (the systems stop reading them at the first
        command), then the set-up lines, then the workers."""
        lines = [SHEBANG, *self.directives(spec), "", *spec.prologue,
                 worker_command(spec, scheduler_file, self.job_id_variable)]
        return "\n".join(lines) + "\n"

    def job_id(self, output: str) -> str:
        """The job id in what the submit command printed; ValueError if there is none."""
        match = re.search(self.job_id_pattern, output)
        if match is None:
            raise ValueError(f"no job id in what {self.submit[0]} printed: {output.strip()!r}")
        return match.group(1)


def _logs(spec: JobSpec, pattern: str) -> list[str]:
    if spec.log_directory is None:
        return []
    path = f"{spec.log_directory.rstrip('/')}/{spec.job_name}-{pattern}"
    return [f"-o {path}.out", f"-e {path}.err"]


def _slurm(spec: JobSpec) -> list[str]:
    lines = [f"-J {spec.job_name}"]
    lines += [f"-p {spec.queue}"] if spec.queue else []
    lines += [f"-A {spec.account}"] if spec.account else []
    lines += ["-N 1", "-n 1", f"--cpus-per-task={spec.cores}", f"--mem={mebibytes(spec.memory)}M"]
    lines += [f"-t {hms(spec.walltime)}"] if spec.walltime else []
    return lines + _logs(spec, "%j")


def _pbs(spec: JobSpec) -> list[str]:
    lines = [f"-N {spec.job_name}"]
    lines += [f"-q {spec.queue}"] if spec.queue else []
    lines += [f"-A {spec.account}"] if spec.account else []
    lines += [f"-l select=1:ncpus={spec.cores}:mem={mebibytes(spec.memory)}mb"]
    lines += [f"-l walltime={hms(spec.walltime)}"] if spec.walltime else []
    if spec.log_directory is not None:  # PBS names the files itself in a directory
        lines += [f"-o {spec.log_directory.rstrip('/')}/", f"-e {spec.log_directory.rstrip('/')}/"]
    return lines


def _sge(spec: JobSpec) -> list[str]:
    lines = [f"-N {spec.job_name}"]
    lines += [f"-q {spec.queue}"] if spec.queue else []
    lines += [f"-A {spec.account}"] if spec.account else []
    # Grid Engine counts memory per slot: the job's memory divided among its cores.
    lines += [f"-pe smp {spec.cores}"] if spec.cores > 1 else []
    lines += [f"-l h_vmem={mebibytes(spec.memory // spec.cores)}M"]
    lines += [f"-l h_rt={hms(spec.walltime)}"] if spec.walltime else []
    lines += ["-cwd", "-j y"]
    if spec.log_directory is not None:
        lines += [f"-o {spec.log_directory.rstrip('/')}/"]
    return lines


def _lsf(spec: JobSpec) -> list[str]:
    lines = [f"-J {spec.job_name}"]
    lines += [f"-q {spec.queue}"] if spec.queue else []
    lines += [f'-P "{spec.account}"'] if spec.account else []
    lines += [f"-n {spec.cores}"]
    lines += ['-R "span[hosts=1]"'] if spec.cores > 1 else []
    lines += [f"-M {mebibytes(spec.memory)}MB"]
    lines += [f"-W {hms(spec.walltime, with_seconds=False)}"] if spec.walltime else []
    return lines + _logs(spec, "%J")


SLURM = BatchSystem(
    name="slurm", prefix="#SBATCH", job_id_variable="SLURM_JOB_ID",
    submit=("sbatch", "--parsable"), submit_on_stdin=False, cancel=("scancel",),
    status=("squeue", "--noheader", "--format=%i", "--user={user}"),
    job_id_pattern=r"^(\d+)", resources=_slurm,
)
PBS = BatchSystem(
    name="pbs", prefix="#PBS", job_id_variable="PBS_JOBID",
    submit=("qsub",), submit_on_stdin=False, cancel=("qdel",), status=None,
    job_id_pattern=r"(\d+(?:\.[\w.-]+)?)", resources=_pbs,
)
SGE = BatchSystem(
    name="sge", prefix="#$", job_id_variable="JOB_ID",
    submit=("qsub", "-terse"), submit_on_stdin=False, cancel=("qdel",), status=None,
    job_id_pattern=r"(\d+)", resources=_sge,
)
LSF = BatchSystem(
    name="lsf", prefix="#BSUB", job_id_variable="LSB_JOBID",
    submit=("bsub",), submit_on_stdin=True, cancel=("bkill",), status=None,
    job_id_pattern=r"<(\d+)>", resources=_lsf,
)
SYSTEMS = {system.name: system for system in (SLURM, PBS, SGE, LSF)}
