"""Running a batch system's commands: submit a script, list live jobs, cancel jobs.

The only I/O of ``corral.deploy.jobqueue``: each function runs one command with
arguments as a list (no shell), and turns a failure into ``JobQueueError`` carrying the
command and the last line it printed, so a refused submission says why in one line.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from corral.deploy.jobqueue.systems import BatchSystem
from corral.exceptions import JobQueueError

COMMAND_TIMEOUT = 60.0  # a controller that does not answer in a minute is not coming


async def run(command: Sequence[str], stdin: bytes | None = None,
              timeout: float = COMMAND_TIMEOUT) -> str:
    """Run ``command``; its standard output, or ``JobQueueError`` saying why not."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE if stdin is not None else
            asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        raise JobQueueError(f"cannot run {command[0]}: {e.strerror or e}") from None
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise JobQueueError(f"{command[0]} did not answer within {timeout:g} s") from None
    if process.returncode != 0:
        lines = (err or out).decode(errors="replace").strip().splitlines()
        said = lines[-1] if lines else f"exit status {process.returncode}"
        raise JobQueueError(f"{' '.join(command[:2])}... failed: {said}")
    return out.decode(errors="replace")


def write_script(directory: str | os.PathLike[str], name: str, text: str) -> Path:
    """Save a job script (mode 0700 directory, 0600 file: it names the scheduler file)."""
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


async def submit(system: BatchSystem, script: Path, text: str) -> str:
    """Submit the script saved at ``script`` (``text`` is what it holds); the job's id."""
    if system.submit_on_stdin:
        out = await run(system.submit, stdin=text.encode())
    else:
        out = await run([*system.submit, str(script)])
    try:
        return system.job_id(out)
    except ValueError as e:
        raise JobQueueError(str(e)) from None


async def cancel(system: BatchSystem, job_ids: Iterable[str]) -> None:
    """Cancel the jobs (queued or running); nothing to do for none."""
    ids = list(job_ids)
    if ids:
        await run([*system.cancel, *ids])


async def live_jobs(system: BatchSystem) -> set[str] | None:
    """Ids of this user's jobs the system still has queued or running; None if the
    system has no such command here (its jobs are then tracked by their workers)."""
    if system.status is None:
        return None
    command = [part.replace("{user}", getpass.getuser()) for part in system.status]
    out = await run(command)
    return {line.split()[0] for line in out.splitlines() if line.strip()}
