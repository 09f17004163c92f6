"""``corral demo`` and ``corral tls generate``."""

from __future__ import annotations

import logging

import click

from corral.cli.common import main, version_option
from corral.utils import run_async

logger = logging.getLogger("corral.cli")
@main.command()
@version_option
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
@version_option
def tls() -> None:
    """TLS certificates for quick secure setups."""


@tls.command()
@version_option
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
