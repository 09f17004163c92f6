"""The ``corral`` command line."""

from __future__ import annotations

import logging

import click

from corral import __version__
from corral.utils import run_async


@click.group()
@click.version_option(__version__, prog_name="corral")
@click.option(
    "--log-level",
    default="warning",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="How much to log to stderr.",
)
def main(log_level: str) -> None:
    """corral: distributed, data-local computing for Python."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


@main.command()
@click.option("--calls", default=2000, show_default=True, help="Sequential rpc calls to time.")
def demo(calls: int) -> None:
    """Run the foundation demo: a server, rpc calls and a streaming handler on loopback."""
    from corral.demo import foundation_demo

    run_async(foundation_demo(calls, echo=click.echo))


if __name__ == "__main__":  # pragma: no cover
    main()
