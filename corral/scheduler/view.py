"""``SchedulerView``: what an observer (the dashboard, ``/metrics``) may read of a scheduler.

Observers hold this, not the server: they read the state machine, the task timeline and
the workers' last reports, and nothing here can change them or reach the server's
streams. The server is imported for its type only, so an observer's module never
imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.scheduler.server import Scheduler
    from corral.scheduler.state import SchedulerState
    from corral.scheduler.timeline import Timeline
    from corral.security import Security


class SchedulerView:
    """A running scheduler, read only; each read is of the scheduler as it is now."""

    __slots__ = ("_scheduler",)

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    @property
    def address(self) -> str:
        return self._scheduler.address

    @property
    def security(self) -> Security | None:
        return self._scheduler.security

    @property
    def state(self) -> SchedulerState:
        """The state machine: to be read (its queries and records), never handled."""
        return self._scheduler.state

    @property
    def timeline(self) -> Timeline:
        return self._scheduler.timeline

    @property
    def worker_info(self) -> Mapping[str, Mapping[str, Any]]:
        """Per worker address: its name, pid and last heartbeat's metrics."""
        return self._scheduler.worker_info
