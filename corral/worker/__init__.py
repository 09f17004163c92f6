"""Workers: run tasks, hold their results, serve them to peers and clients."""

from corral.worker.server import Worker

__all__ = ["Worker"]
