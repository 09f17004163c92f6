"""The user API: ``Client``, ``Future``, ``wait``, ``as_completed``, ``Executor``, and the
seed's ``Pool``.

Names load on first use, so that a module here (a future, ``wait``) can be imported
without the client it is used by. ``progress`` is imported at once: it shares its
module's name, which a later import of that module would otherwise put in its place.
"""

import typing as _typing

from corral._lazy import lazy_exports as _lazy_exports
from corral.client.progress import progress

__getattr__, __dir__ = _lazy_exports(__name__, {
    "ALL_COMPLETED": "corral.client.waiting",
    "FIRST_COMPLETED": "corral.client.waiting",
    "FIRST_EXCEPTION": "corral.client.waiting",
    "AsyncClient": "corral.client.client",
    "Client": "corral.client.sync",
    "Executor": "corral.client.executor",
    "Future": "corral.client.future",
    "as_completed": "corral.client.waiting",
    "wait": "corral.client.waiting",
})

if _typing.TYPE_CHECKING:
    from corral.client.client import AsyncClient
    from corral.client.executor import Executor
    from corral.client.future import Future
    from corral.client.sync import Client
    from corral.client.waiting import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        as_completed,
        wait,
    )

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "AsyncClient",
    "Client",
    "Executor",
    "Future",
    "as_completed",
    "progress",
    "wait",
]
