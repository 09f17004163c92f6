"""The scheduler: knows which worker holds which key and decides where tasks run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Scheduler"]


def __getattr__(name: str) -> Any:
    # Imported on first use: workers import ``corral.scheduler.events`` (the shared
    # message records) and must not pay for the scheduler's server on every start.
    if name == "Scheduler":
        from corral.scheduler.server import Scheduler

        return Scheduler
    raise AttributeError(f"module 'corral.scheduler' has no attribute {name!r}")


if TYPE_CHECKING:
    from corral.scheduler.server import Scheduler
