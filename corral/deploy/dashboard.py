"""Attach the web dashboard (and ``/metrics``) to a listening scheduler, from outside it.

The scheduler server knows nothing of the dashboard: it keeps the services attached to
it, closes them with itself and tells clients their ports. The dashboard knows the
scheduler only through a read-only ``SchedulerView``.

The dashboard listens at once but loads on its first connection (a page, a ``/metrics``
scrape, a health probe): aiohttp and the dashboard are ~0.15 s of CPU, a fifth of a
local cluster's cold start on two cores, which a cluster nobody looks at need not pay.
Connections wait in the listen backlog meanwhile; the first page comes that much later.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from corral.dashboard import listen
from corral.scheduler.view import SchedulerView

if TYPE_CHECKING:
    from corral.dashboard.app import Dashboard
    from corral.scheduler.server import Scheduler

logger = logging.getLogger("corral.dashboard")


class OnDemandDashboard:
    """The dashboard's sockets, listening; ``dashboard`` once the first connection came."""

    def __init__(self, scheduler: Scheduler, address: str,
                 allowed_hosts: tuple[str, ...]) -> None:
        scheduler_host = urlsplit(scheduler.address).hostname or "127.0.0.1"
        self.host, port = listen.parse_address(address, scheduler_host)
        self._sockets = listen.bind(self.host, port)
        self.port: int = self._sockets[0].getsockname()[1]
        self._scheduler, self._allowed_hosts = scheduler, allowed_hosts
        self.dashboard: Dashboard | None = None
        self._loading: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._first_connection)
        self._watching = True

    @property
    def url(self) -> str:
        return listen.url(self.host, self.port)

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())

    def _first_connection(self) -> None:
        self._unwatch()
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())

    async def _load(self) -> None:
        dashboard: Dashboard | None = None
        try:
            if "corral.dashboard.app" not in sys.modules:  # in a thread: the loop serves on
                await _import_in_a_thread("corral.dashboard.app")
            from corral.dashboard.app import Dashboard

            dashboard = Dashboard(SchedulerView(self._scheduler), self._sockets, self.host,
                                  allowed_hosts=self._allowed_hosts)
            await dashboard.start()
        except Exception as e:  # one line; the sockets close, so browsers are refused
            logger.warning("the dashboard failed to start: %s: %s", type(e).__name__, e)
            if dashboard is not None:
                with contextlib.suppress(Exception):
                    await dashboard.close()
            self._close_sockets()
            return
        self.dashboard = dashboard

    def _close_sockets(self) -> None:
        self._unwatch()
        for sock in self._sockets:
            sock.close()

    async def close(self) -> None:
        self._unwatch()
        if self._loading is not None:  # a first connection is being answered: let it
            await self._loading
        if self.dashboard is not None:
            await self.dashboard.close()
        self._close_sockets()


async def _import_in_a_thread(module: str) -> None:
    """Import ``module`` in a thread of its own, which ends with it (the loop's executor
    would keep an idle thread for the rest of the loop's life, for one import)."""
    loop = asyncio.get_running_loop()
    imported: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if not imported.done():
            if error is None:
                imported.set_result(None)
            else:
                imported.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            importlib.import_module(module)
        except BaseException as e:  # handed to the awaiting task
            error = e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name=f"import {module}", daemon=True).start()
    await imported


async def attach_dashboard(
    scheduler: Scheduler, address: str = ":8787", *, allowed_hosts: tuple[str, ...] = ()
) -> OnDemandDashboard:
    """Serve the dashboard at ``address`` ("host:port", ":port": the scheduler's host) for
    ``scheduler``, which must be listening; it closes with the scheduler.

    ``allowed_hosts``: more Host-header names it answers to (e.g. behind a reverse proxy).
    """
    dashboard = OnDemandDashboard(scheduler, address, allowed_hosts)
    try:
        scheduler.attach("dashboard", dashboard)
    except BaseException:
        await dashboard.close()
        raise
    logger.info("dashboard at %s", dashboard.url)
    return dashboard
