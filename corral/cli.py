"""The ``corral`` command line: ``scheduler``, ``worker`` and ``demo``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click

from corral import __version__, config
from corral.credentials import (
    add_to_default_file,
    default_scheduler_file,
    remove_from_default_file,
    remove_scheduler_file,
    resolve,
    write_scheduler_file,
)
from corral.deploy import lifeline
from corral.exceptions import BadMemoryLimit, CommError, CredentialsFileError, HandshakeError
from corral.memory_limit import configured_thresholds, parse_memory_limit
from corral.security import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    Security,
    from_environment,
    new_token,
    read_token_file,
    redact,
    scheme_for,
)
from corral.utils import run_async

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


def parse_resources(text: str) -> dict[str, float]:
    """``'GPU=2,MEM=4e9'`` → ``{'GPU': 2.0, 'MEM': 4e9}``."""
    resources = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, amount = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            resources[name.strip()] = float(amount)
        except ValueError:
            raise click.BadParameter(f"not NAME=AMOUNT: {item!r} (try GPU=2)") from None
    return resources


def security_options(command: Any) -> Any:
    """The credential flags every command that connects or listens takes."""
    options = [
        click.option("--token", help=f"Shared secret peers must prove (or ${TOKEN_ENV}; "
                     "visible to other local users in argv: prefer --token-file)."),
        click.option("--token-file", type=click.Path(exists=True, dir_okay=False),
                     help=f"Read the token from this file (or ${TOKEN_FILE_ENV})."),
        click.option("--tls-ca-file", type=click.Path(exists=True, dir_okay=False),
                     help="CA certificate that peers' certificates must be signed by."),
        click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
                     help="This process's certificate (PEM)."),
        click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
                     help="This process's private key (PEM)."),
        click.option("--tls-check-hostname", is_flag=True,
                     help="Also check that server certificates name the host connected to."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _flag_security(flags: dict[str, Any]) -> Security | None:
    """Credentials from command-line flags alone; None when no flag was given."""
    token = flags.pop("token") or (flags["token_file"] and read_token_file(flags["token_file"]))
    flags.pop("token_file")
    check_hostname = flags.pop("tls_check_hostname")
    tls = {k: flags.pop(k) for k in ("tls_ca_file", "tls_cert", "tls_key")}
    if not token and not any(tls.values()):
        return None
    try:
        return Security(token=token or None, tls_check_hostname=check_hostname, **tls)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


CREDENTIALS_CHECK_TIMEOUT = 3.0  # how long a worker command looks for its scheduler at first


def _run(main: Any) -> None:
    """Run a command's coroutine; a refusal by the other end (wrong or missing token, TLS,
    another protocol version) or a scheduler file that cannot be written safely ends it
    with one line naming the cause, not a traceback."""
    try:
        run_async(main)
    except (HandshakeError, CredentialsFileError) as e:
        raise click.ClickException(str(e)) from None


async def _check_credentials(address: str, security: Security | None) -> None:
    """Before starting worker processes, learn whether the scheduler accepts us: a refusal
    is final and is better said once here than by every worker process. An unreachable
    scheduler is not a refusal; the workers keep trying to reach it."""
    from corral.core import connect

    try:
        comm = await connect(address, timeout=CREDENTIALS_CHECK_TIMEOUT, security=security,
                             role="nanny")
    except HandshakeError:  # final
        raise
    except CommError:  # unreachable (yet)
        return
    comm.abort()


async def _serve_until_signalled(
    *closers: Any, starting: Coroutine[Any, Any, None] | None = None
) -> None:
    """Start (``starting``), then serve until SIGINT/SIGTERM, the parent process's death
    (``corral.deploy.lifeline``) or a closer finishing; then close them all gracefully.

    A signal during ``starting`` (a worker still waiting for its scheduler) cancels it.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.ensure_future(_serve(closers, starting))
    waiters = [serving, asyncio.ensure_future(stop.wait()),
               asyncio.ensure_future(lifeline.parent_gone())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        for closer in closers:
            await closer.close()
    if not serving.cancelled():
        serving.result()  # raise what stopped the start, if anything did


async def _serve(closers: tuple[Any, ...], starting: Coroutine[Any, Any, None] | None) -> None:
    if starting is not None:
        await starting
    finished = [asyncio.ensure_future(c.finished()) for c in closers if hasattr(c, "finished")]
    if not finished:
        await asyncio.Event().wait()  # until cancelled
    try:
        await asyncio.wait(finished, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in finished:
            waiter.cancel()


def _scheduler_security(flags: dict[str, Any], no_auth: bool) -> Security | None:
    """What the scheduler demands: the given credentials, a new token, or (asked) nothing."""
    security = _flag_security(flags) or from_environment()
    if no_auth:
        if security is not None and security.token:
            raise click.UsageError("--no-auth cannot be combined with a token")
        logger.warning(
            "AUTHENTICATION IS OFF (--no-auth): anyone who can reach this scheduler can run "
            "any code on it and on every worker. Use only on a network you fully control."
        )
        return security
    if security is None:
        return Security.generate()
    if security.token is None:  # TLS alone: still add a token, the two combine
        return dataclasses.replace(security, token=new_token())
    return security


LOG_LEVEL_ENV = "CORRAL_LOG_LEVEL"  # inherited by nannies and workers started from here
LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


def _set_log_level(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        os.environ[LOG_LEVEL_ENV] = value.lower()  # CORRAL_LOG_LEVEL is config "log-level"
        config.set({"log-level": value.lower()})
        logging.getLogger("corral").setLevel(value.upper())


def log_level_option(command: Any) -> Any:
    """``--log-level`` on each command, as well as before it."""
    return click.option("--log-level", type=LOG_LEVELS, expose_value=False, is_eager=True,
                        callback=_set_log_level,
                        help="How much to log to stderr [config log-level: info].")(command)


@click.group()
@click.version_option(__version__, prog_name="corral")
@log_level_option
def main() -> None:
    """corral: distributed, data-local computing for Python."""
    lifeline.inherit()  # die with the process that started this one, if one asked
    # One line per event: time, component logger (corral.scheduler, ...), level, message.
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("corral").setLevel(config.get("log-level").upper())


@main.command()
@log_level_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 (or '') accepts workers from other machines.")
@click.option("--port", type=int, help="[config scheduler.port: 8786]")
@click.option("--dashboard-address",
              help="[HOST]:PORT of the web dashboard and /metrics (host defaults to --host); "
                   "'none' turns it off [config dashboard.address: :8787].")
@click.option("--dashboard-allowed-host", "dashboard_allowed_hosts", multiple=True,
              help="Another host name the dashboard may be reached by (e.g. behind a reverse "
                   "proxy); repeatable. Its own addresses are always allowed.")
@click.option("--scheduler-file", type=click.Path(dir_okay=False),
              help="Also write address and credentials here (mode 0600), e.g. on a shared "
                   "filesystem for workers on other machines.")
@security_options
@click.option("--no-auth", is_flag=True,
              help="Accept unauthenticated peers. Anyone who can connect can run code.")
@click.option("--worker-ttl", type=float,
              help="Seconds without a heartbeat after which a worker counts as dead "
                   "[config scheduler.worker-ttl: 30].")
def scheduler(
    host: str,
    port: int | None,
    dashboard_address: str | None,
    dashboard_allowed_hosts: tuple[str, ...],
    scheduler_file: str | None,
    no_auth: bool,
    worker_ttl: float | None,
    **flags: Any,
) -> None:
    """Start a scheduler (with a fresh token unless given one, or --no-auth)."""
    from corral.deploy.dashboard import attach_dashboard
    from corral.scheduler import Scheduler

    port = config.fallback(port, "scheduler.port")
    dashboard_address = str(config.fallback(dashboard_address, "dashboard.address"))

    security = _scheduler_security(flags, no_auth)

    async def run() -> None:
        sched = Scheduler(security=security, worker_ttl=worker_ttl)
        await sched.listen(f"{scheme_for(security)}://{host}:{port}")
        dashboard = None
        if dashboard_address.lower() not in ("none", ""):
            try:
                dashboard = await attach_dashboard(sched, dashboard_address,
                                                   allowed_hosts=dashboard_allowed_hosts)
            except BaseException:
                await sched.close()
                raise
        address = sched.address
        try:  # only now: a client that finds the file finds a scheduler that takes its token
            files = [add_to_default_file(address, security)]
            if scheduler_file:
                files.append(write_scheduler_file(scheduler_file, address, security))
        except CredentialsFileError:
            await sched.close()
            remove_from_default_file(address)
            raise
        token = security.token if security else None
        logger.info("scheduler at %s, token %s, credentials in %s", address, redact(token),
                    " and ".join(map(str, files)))
        logger.info("start workers with: corral worker %s%s", address,
                    "" if not token else f"  (on this machine; elsewhere add "
                    f"--scheduler-file {files[-1]} or ${TOKEN_ENV})")
        logger.info("connect with: Client(%r)", address)
        if dashboard is not None:
            logger.info("dashboard: %s (client.dashboard_link gives a link that logs in)",
                        dashboard.url)
        if host in ("127.0.0.1", "localhost", "::1"):
            logger.info("listening on loopback only; use --host 0.0.0.0 for other machines")
        try:
            await _serve_until_signalled(sched)
        finally:
            remove_from_default_file(address)
            if scheduler_file:
                remove_scheduler_file(scheduler_file, address)

    _run(run())


@main.command()
@log_level_option
@click.argument("scheduler_address", required=False)
@click.option("--scheduler-file", type=click.Path(exists=True, dir_okay=False),
              help="Read the scheduler's address from this file.")
@click.option("--nthreads", type=int, default=None, help="Threads per worker [cores / nworkers].")
@click.option("--nworkers", type=int, default=1, show_default=True,
              help="Worker processes to run, each with its nanny.")
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
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=0, type=int, help="Port to listen on [any free port].")
@click.option("--local-directory", type=click.Path(file_okay=False),
              help="Each worker's scratch directory is made under this "
                   "[config worker.local-directory: the system's temporary directory].")
@security_options
def worker(
    scheduler_address: str | None,
    scheduler_file: str | None,
    nthreads: int | None,
    nworkers: int,
    memory_limit: str | None,
    memory_target_fraction: str | None,
    memory_spill_fraction: str | None,
    memory_pause_fraction: str | None,
    memory_terminate_fraction: str | None,
    no_nanny: bool,
    name: str,
    resources: str,
    host: str,
    port: int,
    death_timeout: float | None,
    liveness_timeout: float,
    local_directory: str | None,
    **flags: Any,
) -> None:
    """Start worker(s) for the scheduler at SCHEDULER_ADDRESS.

    With no address, the scheduler file (--scheduler-file, else the one the last
    `corral scheduler` of this user wrote) gives address and credentials.
    """
    from corral.deploy.process import GAVE_UP_STATUS, NANNY_ENV
    from corral.nanny import Nanny
    from corral.worker import Worker

    if not scheduler_address and not scheduler_file and default_scheduler_file().is_file():
        scheduler_file = str(default_scheduler_file())
    scheduler_address, security = resolve(scheduler_address, _flag_security(flags),
                                          scheduler_file)
    if not scheduler_address:
        raise click.UsageError("give SCHEDULER_ADDRESS or --scheduler-file")
    supplied = parse_resources(resources)
    cores = os.cpu_count() or 1
    threads = nthreads or max(1, cores // max(nworkers, 1))
    scheme = scheme_for(security)
    fractions = {"target": memory_target_fraction, "spill": memory_spill_fraction,
                 "pause": memory_pause_fraction, "terminate": memory_terminate_fraction}
    try:
        limit = parse_memory_limit(config.fallback(memory_limit, "worker.memory-limit"),
                                   share=1 / max(nworkers, 1))
        thresholds = configured_thresholds(**fractions)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None

    worker_args = ("--resources", resources,
                   *(() if death_timeout is None else ("--death-timeout", str(death_timeout))),
                   *(() if local_directory is None else ("--local-directory", local_directory)),
                   *(arg for name, value in fractions.items() if value is not None
                     for arg in (f"--memory-{name}-fraction", value)))
    servers: list[Worker | Nanny] = []
    for i in range(nworkers):
        label = f"{name}-{i}" if name and nworkers > 1 else name
        if no_nanny:
            servers.append(Worker(
                scheduler_address, nthreads=threads, name=label, memory_limit=limit,
                memory_thresholds=thresholds,
                resources=supplied, security=security, death_timeout=death_timeout,
                nanny=os.environ.get(NANNY_ENV), local_directory=local_directory,
            ))
        else:
            servers.append(Nanny(
                scheduler_address, nthreads=threads, name=label, host=host,
                worker_port=port if nworkers == 1 else 0, memory_limit=limit,
                terminate_fraction=thresholds.terminate, security=security,
                liveness_timeout=liveness_timeout, worker_args=worker_args,
            ))

    async def start() -> None:
        if not no_nanny:
            await _check_credentials(scheduler_address, security)
        for server in servers:
            worker_port = port if nworkers == 1 and isinstance(server, Worker) else 0
            await server.start(f"{scheme}://{host}:{worker_port}")

    try:
        run_async(_serve_until_signalled(*servers, starting=start()))
    except (OSError, TimeoutError, RuntimeError, BadMemoryLimit) as e:  # one line, no traceback
        if not any(s.gave_up for s in servers):  # (a worker that gave up has said why)
            logger.error("%s", e, exc_info=logger.isEnabledFor(logging.DEBUG))
            sys.exit(1)
    if any(s.gave_up for s in servers):
        sys.exit(GAVE_UP_STATUS)


@main.command()
@click.option("--workers", default=2, show_default=True, help="Worker processes to start.")
@click.option("--foundation", is_flag=True,
              help="Instead, exercise the foundation: a server, rpc calls, a streaming handler.")
def demo(workers: int, foundation: bool) -> None:
    """Run a data-local computation on a local cluster and explain what happened."""
    logging.getLogger("corral").setLevel(logging.WARNING)  # the demo explains itself
    if foundation:
        from corral.demo import foundation_demo

        run_async(foundation_demo(echo=click.echo))
        return
    from corral.demo_cluster import run_demo

    run_demo(echo=click.echo, n_workers=workers)


@main.group()
def tls() -> None:
    """TLS certificates for quick secure setups."""


@tls.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--host", "hosts", multiple=True,
              help="A host name or IP the certificates must name (repeatable); localhost, "
                   "loopback and this machine's name are always included.")
@click.option("--days", default=365, show_default=True, help="How long they stay valid.")
def generate(directory: str, hosts: tuple[str, ...], days: int) -> None:
    """Create a CA and a certificate/key pair in DIRECTORY, for every corral process."""
    from corral.certs import generate as generate_certs

    files = generate_certs(directory, hosts=hosts, days=days)["node"]
    click.echo(f"wrote {files.ca_file}, {files.cert}, {files.key} (key mode 0600)")
    flags = f"--tls-ca-file {files.ca_file} --tls-cert {files.cert} --tls-key {files.key}"
    click.echo(f"  corral scheduler {flags}")
    click.echo(f"  corral worker tls://HOST:8786 {flags}")


if __name__ == "__main__":  # pragma: no cover
    main()
