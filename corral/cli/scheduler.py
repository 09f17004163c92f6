"""``corral scheduler``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import click

from corral import config
from corral.cli.common import (
    as_duration,
    flag_security,
    log_level_option,
    main,
    run_command,
    security_options,
    serve_until_signalled,
    version_option,
)
from corral.credentials import (
    add_to_default_file,
    remove_from_default_file,
    remove_scheduler_file,
    write_scheduler_file,
)
from corral.deploy.options import writing_pid
from corral.exceptions import CredentialsFileError
from corral.security import TOKEN_ENV, Security, from_environment, new_token, redact, scheme_for

logger = logging.getLogger("corral.cli")
def _scheduler_security(flags: dict[str, Any], no_auth: bool) -> Security | None:
    """What the scheduler demands: the given credentials, a new token, or (asked) nothing."""
    security = flag_security(flags) or from_environment()
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



@main.command()
@version_option
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
@click.option("--worker-saturation",
              help="Root tasks wait on the scheduler until a worker has fewer than "
                   "ceil(threads * this) tasks; inf sends every ready task at once "
                   "[config scheduler.worker-saturation: 1.1].")
@click.option("--idle-timeout", callback=as_duration,
              help="Close after this long with no client connected and no task running "
                   "(e.g. 1h; default: never).")
@click.option("--pid-file", type=click.Path(dir_okay=False),
              help="Write this process's id here while it runs.")
def scheduler(
    host: str,
    port: int | None,
    dashboard_address: str | None,
    dashboard_allowed_hosts: tuple[str, ...],
    scheduler_file: str | None,
    no_auth: bool,
    worker_ttl: float | None,
    worker_saturation: str | None,
    idle_timeout: float | None,
    pid_file: str | None,
    **flags: Any,
) -> None:
    """Start a scheduler (with a fresh token unless given one, or --no-auth)."""
    from corral.deploy.dashboard import attach_dashboard
    from corral.scheduler import Scheduler, collector
    from corral.scheduler.queuing import parse_saturation

    port = config.fallback(port, "scheduler.port")
    dashboard_address = str(config.fallback(dashboard_address, "dashboard.address"))

    security = _scheduler_security(flags, no_auth)
    if worker_saturation is not None:
        try:
            parse_saturation(worker_saturation)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--worker-saturation") from None

    async def run() -> None:
        sched = Scheduler(security=security, worker_ttl=worker_ttl, idle_timeout=idle_timeout,
                          worker_saturation=worker_saturation)
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
            await serve_until_signalled(sched)
        finally:
            remove_from_default_file(address)
            if scheduler_file:
                remove_scheduler_file(scheduler_file, address)

    collector.tune()  # this process is only a scheduler: fewer full collections
    with writing_pid(pid_file):
        run_command(run())
