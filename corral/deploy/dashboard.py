"""Attach the web dashboard (and ``/metrics``) to a listening scheduler, from outside it.

The scheduler server knows nothing of the dashboard: it keeps the services attached to
it, closes them with itself and tells clients their ports. The dashboard knows the
scheduler only through a read-only ``SchedulerView``.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import TYPE_CHECKING

from corral.scheduler.view import SchedulerView

if TYPE_CHECKING:
    from corral.dashboard.app import Dashboard
    from corral.scheduler.server import Scheduler


async def attach_dashboard(
    scheduler: Scheduler, address: str = ":8787", *, allowed_hosts: tuple[str, ...] = ()
) -> Dashboard:
    """Serve the dashboard at ``address`` ("host:port", ":port": the scheduler's host) for
    ``scheduler``, which must be listening; it closes with the scheduler.

    ``allowed_hosts``: more Host-header names it answers to (e.g. behind a reverse proxy).
    """
    if "corral.dashboard.app" not in sys.modules:
        # aiohttp is imported only when serving, and in a thread: it takes ~0.3 s
        await asyncio.to_thread(importlib.import_module, "corral.dashboard.app")
    from corral.dashboard.app import Dashboard

    dashboard = Dashboard(SchedulerView(scheduler), address, allowed_hosts=allowed_hosts)
    await dashboard.start()
    try:
        scheduler.attach("dashboard", dashboard)
    except BaseException:
        await dashboard.close()
        raise
    return dashboard
