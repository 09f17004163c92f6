"""Tasks that launch tasks: ``get_client()``, ``worker_client()``, ``secede()``, ``rejoin()``.

Inside a task, ``get_client()`` is a ``Client`` of the worker's scheduler, with the
worker's credentials, made on first use and shared by every task of that worker (closed
with it). A task that waits for tasks it launched should not hold a thread slot while it
waits — on one-thread workers nothing else could run — so it ``secede()``s first and
``rejoin()``s after: ``with worker_client() as client:`` does both. A seceded task is not
load for the scheduler, and its worker starts the next ready task in its place.

Outside tasks, ``get_client()`` is the default client (``corral.default_client()``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from corral.worker.context import current_task
from corral.worker.secession import rejoin, secede
from corral.worker.server import Worker

if TYPE_CHECKING:
    from corral.client.interface import ClientCore
    from corral.client.sync import Client

__all__ = ["get_client", "rejoin", "secede", "worker_client"]


def get_client(timeout: float | None = None) -> Client:
    """The client for code running here: in a task, the worker's shared client; outside
    tasks, the default client. Raises ``ValueError`` if there is none."""
    task = current_task()
    if task is not None:
        return _client_of(task[0], timeout)
    client = _default_client()
    if client is None:
        raise ValueError("get_client() found no client: call it in a corral task, or make "
                         "a Client first (outside tasks it returns the default client)")
    return client


@contextlib.contextmanager
def worker_client(timeout: float | None = None) -> Iterator[Client]:
    """In a task: the worker's client, with the task seceded from its thread slot for the
    duration of the block (``secede()`` on entry, ``rejoin()`` on exit)."""
    client = get_client(timeout)
    secede()
    try:
        yield client
    finally:
        rejoin()


def client_in_task() -> ClientCore | None:
    """The client a future unpickled here joins: the task's ``get_client()`` (never made
    outside a task: that would block an event loop)."""
    task = current_task()
    return None if task is None else _client_of(task[0], None).core


def _client_of(worker: Worker, timeout: float | None) -> Client:
    from corral.client.sync import Client

    with worker.client_lock:
        client: Client | None = worker.client
        if client is None or client.core.closed:
            options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
            # Never the default: with in-process workers, that is the user's client.
            client = worker.client = Client(
                worker.scheduler_address, security=worker.security, set_as_default=False,
                name=f"worker-{uuid.uuid4().hex[:12]}", **options)
        return client


def _default_client() -> Client | None:
    from corral.client.defaults import default_client

    try:
        return default_client()
    except ValueError:
        return None
