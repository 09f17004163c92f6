"""``corral slurm|pbs|sge|lsf submit``: workers as batch jobs, without writing Python.

    corral scheduler --host 0.0.0.0 --scheduler-file ~/corral.json &
    corral slurm submit -n 4 --cores 2 --memory 4GiB --scheduler-file ~/corral.json

Each job runs ``--processes`` workers that read the scheduler's address and token from
the scheduler file (mode 0600, on a filesystem the compute nodes share): the token is
in no script and on no command line. ``--dry-run`` prints the script instead.
"""

from __future__ import annotations

from pathlib import Path

import click

from corral.cli.common import log_level_option, main, version_option
from corral.credentials import default_scheduler_file, read_scheduler_file
from corral.deploy.jobqueue import SYSTEMS, BatchSystem, JobSpec
from corral.exceptions import JobQueueError
from corral.utils import run_async


def _submit_command(system: BatchSystem) -> click.Command:
    @click.command("submit")
    @version_option
    @log_level_option
    @click.option("-n", "--jobs", default=1, show_default=True, type=click.IntRange(1),
                  help="Jobs to submit, each running --processes workers.")
    @click.option("--cores", required=True, type=click.IntRange(1),
                  help="Cores each job asks for (shared by its worker processes).")
    @click.option("--memory", required=True,
                  help="Memory each job asks for (4GiB, 16GB), shared by its workers.")
    @click.option("--processes", type=click.IntRange(1), default=None,
                  help="Worker processes per job [about the square root of --cores].")
    @click.option("--walltime", default=None,
                  help="Run time limit of each job (01:30:00, 90m); workers retire "
                       "gracefully a margin before it.")
    @click.option("--queue", default=None, help="Queue (SLURM: partition) to submit to.")
    @click.option("--account", default=None, help="Account (LSF: project) to charge.")
    @click.option("--job-name", default="corral-worker", show_default=True)
    @click.option("--job-extra", multiple=True,
                  help=f"One more directive, without '{system.prefix}' (repeatable), "
                       "e.g. '--exclusive'.")
    @click.option("--prologue", multiple=True,
                  help="A shell line run before the workers (repeatable), e.g. "
                       "'module load python' or 'source ~/venv/bin/activate'.")
    @click.option("--python", default=None,
                  help="The interpreter with corral installed on the compute nodes "
                       "[this one].")
    @click.option("--interface", default=None,
                  help="Network interface the workers listen on (ib0) [all].")
    @click.option("--log-directory", type=click.Path(file_okay=False), default=None,
                  help="Where the jobs write their output [the system's default].")
    @click.option("--scheduler-file", type=click.Path(dir_okay=False), default=None,
                  help="The scheduler's file (from `corral scheduler --scheduler-file`), "
                       "on a filesystem the compute nodes share [~/.corral/scheduler.json].")
    @click.option("--dry-run", is_flag=True, help="Print the job script; submit nothing.")
    def submit(jobs: int, cores: int, memory: str, processes: int | None, walltime: str | None,
               queue: str | None, account: str | None, job_name: str,
               job_extra: tuple[str, ...], prologue: tuple[str, ...], python: str | None,
               interface: str | None, log_directory: str | None, scheduler_file: str | None,
               dry_run: bool) -> None:
        path = Path(scheduler_file).expanduser() if scheduler_file else default_scheduler_file()
        try:
            spec = JobSpec.make(
                cores=cores, memory=memory, processes=processes, walltime=walltime,
                queue=queue, account=account, job_name=job_name, job_extra=job_extra,
                prologue=prologue, python=python, interface=interface,
                log_directory=str(Path(log_directory).resolve()) if log_directory else None)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        text = system.job_script(spec, str(path.resolve()))
        if dry_run:
            click.echo(text, nl=False)
            return
        try:
            address, _ = read_scheduler_file(path)
        except (OSError, ValueError) as e:
            raise click.ClickException(
                f"no scheduler file at {path} ({e}); start one with `corral scheduler "
                f"--host 0.0.0.0 --scheduler-file {path}`") from None
        if log_directory:
            Path(log_directory).mkdir(parents=True, exist_ok=True)
        try:
            ids = run_async(_submit_all(system, text, jobs))
        except JobQueueError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"submitted {len(ids)} job(s) of {spec.processes} worker(s) for "
                   f"{address}: {' '.join(ids)}")
        click.echo(f"  cancel them with: {' '.join(system.cancel)} {' '.join(ids)}")

    submit.help = (f"Submit --jobs {system.name.upper()} jobs that start corral workers for "
                   "the scheduler named in --scheduler-file.")
    return submit


async def _submit_all(system: BatchSystem, text: str, jobs: int) -> list[str]:
    """Submit the script ``jobs`` times; the batch system keeps its own copy of it."""
    import tempfile

    from corral.deploy.jobqueue.commands import submit, write_script

    with tempfile.TemporaryDirectory(prefix="corral-jobs-") as directory:
        script = write_script(directory, f"corral-{system.name}.sh", text)
        return [await submit(system, script, text) for _ in range(jobs)]


def _group(system: BatchSystem) -> click.Group:
    @click.group(system.name)
    @version_option
    def group() -> None:
        pass

    group.help = f"corral workers as {system.name.upper()} batch jobs."
    group.add_command(_submit_command(system))
    return group


for _system in SYSTEMS.values():
    main.add_command(_group(_system))
