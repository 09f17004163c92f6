"""The scheduler: knows which worker holds which key and decides where tasks run."""

from corral.scheduler.server import Scheduler

__all__ = ["Scheduler"]
