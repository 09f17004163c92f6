"""Workers: run tasks, hold their results, serve them to peers and clients.

``Worker`` and ``get_worker`` (the server) are imported on first use: the pure state
machine in ``corral.worker.state`` loads no server, transport or event loop.
"""

import typing as _typing

from corral._lazy import lazy_exports as _lazy_exports

__getattr__, __dir__ = _lazy_exports(
    __name__, {"Worker": "corral.worker.server", "get_worker": "corral.worker.context"}
)

if _typing.TYPE_CHECKING:
    from corral.worker.context import get_worker
    from corral.worker.server import Worker

__all__ = ["Worker", "get_worker"]
