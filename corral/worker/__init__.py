"""Workers: run tasks, hold their results, serve them to peers and clients."""

from corral.worker.server import Worker, get_worker

__all__ = ["Worker", "get_worker"]
