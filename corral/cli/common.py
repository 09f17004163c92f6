"""What every ``corral`` command shares: the group itself, ``--log-level``,
``--version``, credential flags, sizes and durations, and serving until signalled."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

import click

from corral import __version__, config
from corral.deploy import lifeline
from corral.deploy.options import parse_duration, parse_ports
from corral.exceptions import CommError, CredentialsFileError, HandshakeError
from corral.security import TOKEN_ENV, TOKEN_FILE_ENV, Security, read_token_file
from corral.utils import run_async

logger = logging.getLogger("corral.cli")

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


def flag_security(flags: dict[str, Any]) -> Security | None:
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


def run_command(main: Any) -> None:
    """Run a command's coroutine; a refusal by the other end (wrong or missing token, TLS,
    another protocol version) or a scheduler file that cannot be written safely ends it
    with one line naming the cause, not a traceback."""
    try:
        run_async(main)
    except (HandshakeError, CredentialsFileError) as e:
        raise click.ClickException(str(e)) from None


async def check_credentials(address: str, security: Security | None) -> None:
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


async def serve_until_signalled(
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


def version_option(command: Any) -> Any:
    """``--version`` on each command, as well as before it."""
    return click.version_option(__version__, prog_name="corral")(command)


def as_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    try:
        return None if value is None else parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def as_ports(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int]:
    try:
        return parse_ports(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


class LazyGroup(click.Group):
    """A group whose commands' modules are imported when a command is asked for: a worker
    process (started once per worker, twice with its nanny) then does not pay for the
    batch-system commands' imports, nor ``corral slurm`` for the worker's."""

    modules = {"scheduler": "corral.cli.scheduler", "worker": "corral.cli.worker",
               "demo": "corral.cli.tools", "tls": "corral.cli.tools",
               "slurm": "corral.cli.jobqueue", "pbs": "corral.cli.jobqueue",
               "sge": "corral.cli.jobqueue", "lsf": "corral.cli.jobqueue"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.modules))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.modules:
            importlib.import_module(self.modules[cmd_name])  # it registers its command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@log_level_option
def main() -> None:
    """corral: distributed, data-local computing for Python."""
    lifeline.inherit()  # die with the process that started this one, if one asked
    # One line per event: time, component logger (corral.scheduler, ...), level, message.
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("corral").setLevel(config.get("log-level").upper())
