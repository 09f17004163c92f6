"""The user API: ``Client``, ``Future``, ``wait``, ``as_completed``, ``Executor``, and the
seed's ``Pool``."""

from corral.client.client import AsyncClient
from corral.client.executor import Executor
from corral.client.future import Future
from corral.client.progress import progress
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
