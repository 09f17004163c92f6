"""The ``corral`` command line: ``scheduler``, ``worker`` and ``demo``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import click

from corral import __version__
from corral.deploy.process import PARENT_PID_ENV, TOKEN_ENV
from corral.security import Security
from corral.utils import run_async

logger = logging.getLogger("corral.cli")

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_bytes(text: str) -> int:
    """``'4GiB'`` → 4294967296; ``'1.5 GB'`` → 1500000000."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise click.BadParameter(f"not a size: {text!r} (try 4GiB or 500MB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _security(token: str | None) -> Security | None:
    token = token or os.environ.get(TOKEN_ENV)
    return Security(token=token) if token else None


async def _serve_until_signalled(*closers: Any, watch_parent: bool = False) -> None:
    """Wait for SIGINT/SIGTERM (or the parent process to vanish), then close gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.ensure_future(stop.wait())]
    waiters += [asyncio.ensure_future(c.finished()) for c in closers if hasattr(c, "finished")]
    if watch_parent:
        waiters.append(asyncio.ensure_future(_parent_gone()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    for closer in closers:
        await closer.close()


async def _parent_gone() -> None:
    import psutil

    parent = int(os.environ[PARENT_PID_ENV])
    while psutil.pid_exists(parent):  # noqa: ASYNC110 - polling another process, no event
        await asyncio.sleep(0.5)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it will carry credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


@click.group()
@click.version_option(__version__, prog_name="corral")
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="How much to log to stderr.",
)
def main(log_level: str) -> None:
    """corral: distributed, data-local computing for Python."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 (or '') accepts workers from other machines.")
@click.option("--port", default=8786, show_default=True, type=int)
@click.option("--dashboard-address", default=":8787", show_default=True,
              help="Where the dashboard will listen (served once the dashboard lands).")
@click.option("--scheduler-file", type=click.Path(dir_okay=False),
              help="Write the address here, for workers and clients on a shared filesystem.")
@click.option("--token", help=f"Shared secret peers must prove (or ${TOKEN_ENV}).")
@click.option("--worker-ttl", default=30.0, show_default=True,
              help="Seconds without a heartbeat after which a worker counts as dead.")
def scheduler(
    host: str,
    port: int,
    dashboard_address: str,
    scheduler_file: str | None,
    token: str | None,
    worker_ttl: float,
) -> None:
    """Start a scheduler."""
    from corral.scheduler import Scheduler

    async def run() -> None:
        sched = Scheduler(security=_security(token), worker_ttl=worker_ttl)
        await sched.listen(f"tcp://{host}:{port}" if host else f"tcp://:{port}")
        address = sched.address
        if scheduler_file:
            _write_private(Path(scheduler_file), json.dumps({"address": address}))
        logger.info("scheduler at %s — start workers with: corral worker %s", address, address)
        if host in ("127.0.0.1", "localhost", "::1"):
            logger.info("listening on loopback only; use --host 0.0.0.0 for other machines")
        await _serve_until_signalled(sched)

    run_async(run())


@main.command()
@click.argument("scheduler_address", required=False)
@click.option("--scheduler-file", type=click.Path(exists=True, dir_okay=False),
              help="Read the scheduler's address from this file.")
@click.option("--nthreads", type=int, default=None, help="Threads per worker [cores / nworkers].")
@click.option("--nworkers", type=int, default=1, show_default=True,
              help="Worker processes to run, each with its nanny.")
@click.option("--memory-limit", default="0",
              help="e.g. 4GiB; the nanny restarts a worker above it. 0 means no limit.")
@click.option("--no-nanny", is_flag=True,
              help="Run the worker(s) in this process, with no nanny to restart them.")
@click.option("--reconnect-timeout", default=60.0, show_default=True,
              help="Seconds a worker keeps trying to reach a lost scheduler before exiting.")
@click.option("--liveness-timeout", default=30.0, show_default=True,
              help="Seconds the nanny waits for a blocked worker to answer before restarting it.")
@click.option("--name", default="", help="A name for the worker (default: its address).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=0, type=int, help="Port to listen on [any free port].")
@click.option("--token", help=f"Shared secret (or ${TOKEN_ENV}).")
def worker(
    scheduler_address: str | None,
    scheduler_file: str | None,
    nthreads: int | None,
    nworkers: int,
    memory_limit: str,
    no_nanny: bool,
    name: str,
    host: str,
    port: int,
    token: str | None,
    reconnect_timeout: float,
    liveness_timeout: float,
) -> None:
    """Start worker(s) for the scheduler at SCHEDULER_ADDRESS."""
    from corral.deploy.process import NANNY_ENV
    from corral.nanny import Nanny
    from corral.worker import Worker

    if scheduler_file:
        scheduler_address = json.loads(Path(scheduler_file).read_text())["address"]
    if not scheduler_address:
        raise click.UsageError("give SCHEDULER_ADDRESS or --scheduler-file")
    limit = parse_bytes(memory_limit)
    cores = os.cpu_count() or 1
    threads = nthreads or max(1, cores // max(nworkers, 1))
    security = _security(token)

    async def run() -> None:
        servers: list[Worker | Nanny] = []
        for i in range(nworkers):
            label = f"{name}-{i}" if name and nworkers > 1 else name
            worker_port = port if nworkers == 1 else 0
            if no_nanny:
                server: Worker | Nanny = Worker(
                    scheduler_address, nthreads=threads, name=label, memory_limit=limit,
                    security=security, reconnect_timeout=reconnect_timeout,
                    nanny=os.environ.get(NANNY_ENV),
                )
                await server.start(f"tcp://{host}:{worker_port}")
            else:
                server = Nanny(
                    scheduler_address, nthreads=threads, name=label, host=host,
                    worker_port=worker_port, memory_limit=limit, security=security,
                    liveness_timeout=liveness_timeout,
                    worker_args=("--reconnect-timeout", str(reconnect_timeout)),
                )
                await server.start(f"tcp://{host}:0")
            servers.append(server)
        await _serve_until_signalled(*servers, watch_parent=PARENT_PID_ENV in os.environ)

    run_async(run())


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


if __name__ == "__main__":  # pragma: no cover
    main()
