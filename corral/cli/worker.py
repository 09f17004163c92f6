"""``corral worker``: worker processes, each under a nanny unless ``--no-nanny``."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from corral import config
from corral.cli.common import (
    as_duration,
    as_ports,
    check_credentials,
    flag_security,
    log_level_option,
    main,
    parse_resources,
    security_options,
    serve_until_signalled,
    version_option,
)
from corral.credentials import default_scheduler_file, resolve
from corral.deploy.options import auto_nworkers, listen_host, listen_in_range, writing_pid
from corral.memory_limit import configured_thresholds, parse_memory_limit
from corral.security import scheme_for
from corral.utils import run_async

if TYPE_CHECKING:
    from corral.nanny import Nanny
    from corral.worker import Worker

logger = logging.getLogger("corral.cli")


def memory_options(command: Any) -> Any:
    """The fractions of a worker's memory limit that matter (docs/memory.md)."""
    fraction = "Fraction of the memory limit {} ('false' turns it off) [config worker.memory.{}]."
    options = [
        click.option("--memory-target-fraction", default=None,
                     help=fraction.format("beyond which data is spilled to disk", "target")),
        click.option("--memory-spill-fraction", default=None,
                     help=fraction.format("of process memory from which data is spilled "
                                          "until back under target", "spill")),
        click.option("--memory-pause-fraction", default=None,
                     help=fraction.format("of process memory at which the worker pauses",
                                          "pause")),
        click.option("--memory-terminate-fraction", default=None,
                     help=fraction.format("of process memory at which the nanny restarts "
                                          "the worker", "terminate")),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@version_option
@log_level_option
@click.argument("scheduler_address", required=False)
@click.option("--scheduler-file", type=click.Path(exists=True, dir_okay=False),
              help="Read the scheduler's address from this file.")
@click.option("--nthreads", type=int, default=None, help="Threads per worker [cores / nworkers].")
@click.option("--nworkers", default="1", show_default=True,
              help="Worker processes to run, each with its nanny; 'auto' picks processes "
                   "and threads from the number of cores.")
@click.option("--memory-limit", default=None,
              help="Per worker: 4GiB, 1e9, a fraction of this machine's memory (0.5), 'auto' "
                   "(its memory, or the cgroup's limit, shared among these workers by "
                   "threads) or 0 for none [config worker.memory-limit: auto]. Data spills to "
                   "disk from 0.6 of it, the worker pauses at 0.8 and its nanny restarts it "
                   "at 0.95 (see docs/memory.md).")
@memory_options
@click.option("--no-nanny", is_flag=True,
              help="Run the worker(s) in this process, with no nanny to restart them.")
@click.option("--death-timeout", type=float, default=None,
              help="Seconds without reaching the scheduler after which a worker gives up and "
                   "exits [default: never; it keeps trying until stopped].")
@click.option("--liveness-timeout", default=30.0, show_default=True,
              help="Seconds the nanny waits for a blocked worker to answer before restarting it.")
@click.option("--name", default="", help="A name for the worker (default: its address).")
@click.option("--resources", default="",
              help="Abstract resources of each worker, e.g. 'GPU=2,MEM=8e9'; a task submitted "
                   "with resources={'GPU': 1} runs only where and while one is free.")
@click.option("--host", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--interface", help="Network interface to listen on (e.g. eth0, ib0), "
                                  "instead of --host.")
@click.option("--worker-port", "--port", "worker_ports", callback=as_ports,
              help="Port for the worker to listen on, or a range (8000:8010) to take the "
                   "first free one of [any free port].")
@click.option("--nanny-port", "nanny_ports", callback=as_ports,
              help="Port or range of ports for the nanny [any free port].")
@click.option("--listen-address",
              help="Full address the worker listens at (tcp://0.0.0.0:8000), e.g. in a "
                   "container; with --contact-address when others reach it elsewhere.")
@click.option("--contact-address",
              help="Address the scheduler and other workers reach this worker at "
                   "(tcp://public-host:8000), e.g. behind NAT.")
@click.option("--preload", "preloads", multiple=True,
              help="Module or .py file the worker imports at start-up; its corral_setup"
                   "(worker) (or dask_setup) is called then, corral_teardown at close. "
                   "Repeatable.")
@click.option("--lifetime", callback=as_duration,
              help="Retire the worker gracefully after this long (e.g. 1h): its data moves "
                   "to other workers first.")
@click.option("--lifetime-stagger", default="0", callback=as_duration,
              help="Random amount by which to move each worker's lifetime either way, so "
                   "workers started together do not leave together.")
@click.option("--lifetime-restart", is_flag=True,
              help="When the lifetime is over, have the nanny start a fresh worker.")
@click.option("--pid-file", type=click.Path(dir_okay=False),
              help="Write this process's id here while it runs.")
@click.option("--local-directory", type=click.Path(file_okay=False),
              help="Each worker's scratch directory is made under this "
                   "[config worker.local-directory: the system's temporary directory].")
@security_options
def worker(
    scheduler_address: str | None,
    scheduler_file: str | None,
    nthreads: int | None,
    nworkers: str,
    memory_limit: str | None,
    memory_target_fraction: str | None,
    memory_spill_fraction: str | None,
    memory_pause_fraction: str | None,
    memory_terminate_fraction: str | None,
    no_nanny: bool,
    name: str,
    resources: str,
    host: str | None,
    interface: str | None,
    worker_ports: list[int],
    nanny_ports: list[int],
    listen_address: str | None,
    contact_address: str | None,
    preloads: tuple[str, ...],
    lifetime: float | None,
    lifetime_stagger: float,
    lifetime_restart: bool,
    pid_file: str | None,
    death_timeout: float | None,
    liveness_timeout: float,
    local_directory: str | None,
    **flags: Any,
) -> None:
    """Start worker(s) for the scheduler at SCHEDULER_ADDRESS.

    With no address, the scheduler file (--scheduler-file, else the one the last
    `corral scheduler` of this user wrote) gives address and credentials.
    """
    from corral.deploy.process import GAVE_UP_STATUS, NANNY_ENV, RESTART_STATUS

    if not scheduler_address and not scheduler_file and default_scheduler_file().is_file():
        scheduler_file = str(default_scheduler_file())
    scheduler_address, security = resolve(scheduler_address, flag_security(flags),
                                          scheduler_file)
    if not scheduler_address:
        raise click.UsageError("give SCHEDULER_ADDRESS or --scheduler-file")
    supplied = parse_resources(resources)
    host = _listen_host(host, interface)
    count, threads = _how_many(nworkers, nthreads)
    fractions = {"target": memory_target_fraction, "spill": memory_spill_fraction,
                 "pause": memory_pause_fraction, "terminate": memory_terminate_fraction}
    try:
        limit = parse_memory_limit(config.fallback(memory_limit, "worker.memory-limit"),
                                   share=1 / count)
        thresholds = configured_thresholds(**fractions)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if (listen_address or contact_address) and count > 1:
        raise click.UsageError("--listen-address and --contact-address name one worker: "
                               "use them with --nworkers 1")
    for ports, flag in ((worker_ports, "--worker-port"), (nanny_ports, "--nanny-port")):
        if count > 1 and len(ports) == 1 and ports[0]:
            raise click.UsageError(f"{flag} with {count} workers needs a range (e.g. "
                                   f"{ports[0]}:{ports[0] + count - 1}) or nothing")
    scheme = scheme_for(security)
    worker_args = (
        "--resources", resources, "--worker-port",
        "0" if worker_ports == [0] else f"{worker_ports[0]}:{worker_ports[-1]}",
        *(() if death_timeout is None else ("--death-timeout", str(death_timeout))),
        *(a for p in preloads for a in ("--preload", p)),
        *(() if lifetime is None else ("--lifetime", str(lifetime), "--lifetime-stagger",
                                       str(lifetime_stagger or 0.0))),
        *(("--lifetime-restart",) if lifetime_restart else ()),
        *(("--listen-address", listen_address) if listen_address else ()),
        *(("--contact-address", contact_address) if contact_address else ()),
        *(() if local_directory is None else ("--local-directory", local_directory)),
        *(arg for name, value in fractions.items() if value is not None
          for arg in (f"--memory-{name}-fraction", value)),
    )
    # Each imported only where it runs: a nanny's process does not need the worker's code.
    workers: list[Worker] = []
    nannies: list[Nanny] = []
    for i in range(count):
        label = f"{name}-{i}" if name and count > 1 else name
        if no_nanny:
            from corral.worker import Worker

            workers.append(Worker(
                scheduler_address, nthreads=threads, name=label, memory_limit=limit,
                memory_thresholds=thresholds, resources=supplied, security=security,
                death_timeout=death_timeout, nanny=os.environ.get(NANNY_ENV),
                contact_address=contact_address,
                local_directory=local_directory,
                preload=preloads, lifetime=lifetime, lifetime_stagger=lifetime_stagger or 0.0,
            ))
        else:
            from corral.nanny import Nanny

            nannies.append(Nanny(
                scheduler_address, nthreads=threads, name=label, host=host,
                memory_limit=limit, terminate_fraction=thresholds.terminate, security=security,
                liveness_timeout=liveness_timeout,
                worker_args=worker_args,
            ))

    servers: list[Worker | Nanny] = [*workers, *nannies]

    async def start() -> None:
        if nannies:
            await check_credentials(scheduler_address, security)
        for nanny in nannies:
            await listen_in_range(nanny.start, scheme, host, nanny_ports, "nanny")
        for worker in workers:
            if listen_address:
                await worker.start(listen_address)
            else:
                await listen_in_range(worker.start, scheme, host, worker_ports, "worker")

    try:
        with writing_pid(pid_file):
            run_async(serve_until_signalled(*servers, starting=start()))
    except (OSError, TimeoutError, RuntimeError, ValueError) as e:  # expected: one line
        if not any(s.gave_up for s in servers):  # (a worker that gave up has said why)
            logger.error("%s", e, exc_info=logger.isEnabledFor(logging.DEBUG))
            sys.exit(1)
    if any(s.gave_up for s in servers):
        sys.exit(GAVE_UP_STATUS)
    if lifetime_restart and any(w.retired and w.lifecycle.lifetime_over for w in workers):
        sys.exit(RESTART_STATUS)  # the nanny starts a fresh one


def _listen_host(host: str | None, interface: str | None) -> str:
    if host is not None and interface is not None:
        raise click.UsageError("give --host or --interface, not both")
    try:
        return listen_host(host, None, interface)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--interface") from None


def _how_many(nworkers: str, nthreads: int | None) -> tuple[int, int]:
    """(worker processes, threads each) for ``--nworkers`` and ``--nthreads``."""
    cores = os.cpu_count() or 1
    if nworkers == "auto":
        count, threads = auto_nworkers(cores)
    else:
        try:
            count = int(nworkers)
        except ValueError:
            count = 0
        if count < 1:
            raise click.BadParameter(f"not a number of workers, nor 'auto': {nworkers!r}",
                                     param_hint="--nworkers")
        threads = max(1, cores // count)
    return count, nthreads or threads
