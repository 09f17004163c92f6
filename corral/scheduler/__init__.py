"""The scheduler: knows which worker holds which key and decides where tasks run.

``Scheduler`` (the server) is imported on first use: the pure state machine in
``corral.scheduler.state`` loads no server, transport or event loop.
"""

import typing as _typing

from corral._lazy import lazy_exports as _lazy_exports

__getattr__, __dir__ = _lazy_exports(__name__, {"Scheduler": "corral.scheduler.server"})

if _typing.TYPE_CHECKING:
    from corral.scheduler.server import Scheduler

__all__ = ["Scheduler"]
