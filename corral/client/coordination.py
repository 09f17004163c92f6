"""Locks, semaphores, events, variables and queues shared across a cluster.

The scheduler holds them (``corral.scheduler.coordination`` decides), so they work
across clients and from inside tasks. A name refers to the same primitive anywhere:
``Lock("db")`` in a task and in the client script are one lock. Each is usable with a
synchronous ``Client`` (``Lock``, ...) or an asynchronous one (``AsyncLock``, ...,
whose methods are coroutines). Without ``client=``, the client is found when first
used: inside a task, the worker's client; elsewhere the default client
(``corral.get_client()``). Objects pickle by name, so they can be passed to tasks.

Timeouts are counted by the scheduler from when it receives the request; ``None``
waits for as long as it takes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from corral import messages as msgs
from corral.client.client import AsyncClient
from corral.client.requests import dump_item

logger = logging.getLogger("corral.client")
T = TypeVar("T")
Timeout = float | str | timedelta | None  # seconds; "500ms" and timedelta as dask takes them


def resolve_client(client: Any) -> AsyncClient:
    """The asynchronous client behind ``client`` (a ``Client`` or ``AsyncClient``), or
    behind ``corral.get_client()`` if None."""
    if client is None:
        import corral

        get_client = getattr(corral, "get_client", None)
        if get_client is None:  # pragma: no cover - until corral.get_client exists
            raise ValueError("no client given: pass client=")
        client = get_client()
    core = getattr(client, "core", client)
    if not isinstance(core, AsyncClient):
        raise TypeError(f"expected a corral Client, got {type(client).__name__}")
    return core


def _checked_timeout(timeout: float | str | timedelta | None) -> float | None:
    """Seconds, or None; dask's spellings (``"500ms"``, a ``timedelta``) are read too."""
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    elif isinstance(timeout, str):
        try:
            from dask.utils import parse_timedelta
        except ImportError:  # pragma: no cover - dask is optional
            raise ValueError(f"timeout {timeout!r}: give seconds as a number") from None
        timeout = parse_timedelta(timeout)
    if timeout is not None and (timeout < 0 or timeout != timeout):
        raise ValueError(f"timeout must be a number of seconds >= 0, or None; got {timeout}")
    return None if timeout is None else float(timeout)


class _Primitive:
    kind: ClassVar[str]

    def __init__(self, name: str | None, client: Any) -> None:
        self.name = name if name is not None else f"{self.kind}-{uuid.uuid4().hex}"
        self._client = client
        self._core: AsyncClient | None = None

    @property
    def client(self) -> AsyncClient:
        if self._core is None:
            self._core = resolve_client(self._client)
        return self._core

    async def _ask(self, cls: type[msgs.CoordinationRequest],
                   **fields: Any) -> tuple[msgs.CoordinationReply, list[Any]]:
        return await self.client.requests.ask(cls, self.name, **fields)

    def _args(self) -> tuple[Any, ...]:
        return (self.name,)

    def __reduce__(self) -> Any:
        return type(self), self._args()  # without the client: found where it lands

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class AsyncSemaphore(_Primitive):
    """At most ``max_leases`` holders at a time: ``async with sem:`` or acquire/release.

    A lease belongs to the client that took it; if that client (or the worker whose
    task took it) dies, disconnects or falls silent for the scheduler's lease timeout,
    the lease is released."""

    kind = "semaphore"

    def __init__(self, max_leases: int = 1, name: str | None = None, client: Any = None) -> None:
        if max_leases < 1:
            raise ValueError(f"max_leases must be >= 1, got {max_leases}")
        super().__init__(name, client)
        self.max_leases = max_leases
        self._leases: list[str] = []  # held through this object, oldest first

    def _args(self) -> tuple[Any, ...]:
        return (self.max_leases, self.name)

    async def acquire(self, timeout: Timeout = None) -> bool:
        """Take a lease; False if none came free within ``timeout`` seconds."""
        lease = uuid.uuid4().hex
        reply, _ = await self._ask(msgs.AcquireLease, kind=self.kind, lease=lease,
                                   max_leases=self.max_leases,
                                   timeout=_checked_timeout(timeout))
        if reply.outcome == "timeout":
            return False
        self._leases.append(lease)
        self.client.requests.leased(lease, float(reply.value))
        return True

    async def release(self) -> bool:
        """Give back the oldest lease taken through this object. False (and a warning)
        if the scheduler had already let it go (its holder was thought dead)."""
        if not self._leases:
            raise RuntimeError(f"{self.kind} {self.name!r} was not acquired through this "
                               f"{type(self).__name__.removeprefix('Async')}")
        lease = self._leases.pop(0)
        self.client.requests.leases.discard(lease)
        reply, _ = await self._ask(msgs.ReleaseLease, kind=self.kind, lease=lease)
        if not reply.value:
            logger.warning("%s %r: the lease had already expired (its holder fell silent "
                           "for longer than the lease timeout)", self.kind, self.name)
        return bool(reply.value)

    async def get_value(self) -> int:
        """How many leases are held now, by anyone."""
        reply, _ = await self._ask(msgs.Inspect, kind=self.kind)
        return int(reply.value)

    async def __aenter__(self) -> AsyncSemaphore:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()


class AsyncLock(AsyncSemaphore):
    """A cluster-wide mutual-exclusion lock: a semaphore of one lease."""

    kind = "lock"

    def __init__(self, name: str | None = None, client: Any = None) -> None:
        super().__init__(1, name, client)

    def _args(self) -> tuple[Any, ...]:
        return (self.name,)

    async def acquire(self, blocking: bool = True,  # type: ignore[override]
                      timeout: Timeout = None) -> bool:
        """Take the lock; False if it did not come free within ``timeout`` seconds (or
        at once, with ``blocking=False``)."""
        if not blocking:
            if timeout is not None:
                raise ValueError("a non-blocking acquire cannot have a timeout")
            timeout = 0
        return await super().acquire(timeout)

    async def locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return await self.get_value() > 0


class AsyncEvent(_Primitive):
    """A flag tasks and clients can wait for."""

    kind = "event"

    async def set(self) -> None:
        """Set the flag: every waiter wakes, and waits return at once until ``clear``."""
        await self._ask(msgs.SetEvent, value=True)

    async def clear(self) -> None:
        await self._ask(msgs.SetEvent, value=False)

    async def is_set(self) -> bool:
        reply, _ = await self._ask(msgs.Inspect, kind=self.kind)
        return bool(reply.value)

    async def wait(self, timeout: Timeout = None) -> bool:
        """Wait until the flag is set: True, or False after ``timeout`` seconds."""
        reply, _ = await self._ask(msgs.WaitEvent, timeout=_checked_timeout(timeout))
        return reply.outcome == "ok"


class AsyncVariable(_Primitive):
    """A named value: any picklable object or a future (whose data the scheduler keeps
    while the variable holds it)."""

    kind = "variable"

    async def set(self, value: Any) -> None:
        await self._ask(msgs.SetVariable, item=dump_item(value))

    async def get(self, timeout: Timeout = None) -> Any:
        """The value, waiting until one is set; ``TimeoutError`` after ``timeout`` s."""
        reply, values = await self._ask(msgs.GetVariable, timeout=_checked_timeout(timeout))
        if reply.outcome == "timeout":
            raise TimeoutError(f"variable {self.name!r} was not set within {timeout} s")
        return values[0]

    async def delete(self) -> None:
        """Remove the value (and let go of a future it held)."""
        await self._ask(msgs.SetVariable, item=None)


class AsyncQueue(_Primitive):
    """A first-in, first-out queue of picklable objects or futures; ``maxsize`` (0:
    unbounded) makes ``put`` wait for room."""

    kind = "queue"

    def __init__(self, name: str | None = None, client: Any = None, maxsize: int = 0) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        super().__init__(name, client)
        self.maxsize = maxsize

    def _args(self) -> tuple[Any, ...]:
        return (self.name, None, self.maxsize)

    async def put(self, value: Any, timeout: Timeout = None) -> None:
        """Append ``value``; ``TimeoutError`` if there was no room within ``timeout`` s."""
        reply, _ = await self._ask(msgs.PutQueue, item=dump_item(value), maxsize=self.maxsize,
                                   timeout=_checked_timeout(timeout))
        if reply.outcome == "timeout":
            raise TimeoutError(f"queue {self.name!r} had no room within {timeout} s")

    async def get(self, timeout: Timeout = None, batch: bool | int = False) -> Any:
        """The oldest item, waiting for one; with ``batch=n``, a list of the ``n`` oldest
        (waiting for them all), with ``batch=True`` a list of all there are now."""
        count = 1 if batch is False else 0 if batch is True else int(batch)
        if batch is not True and count < 1:
            raise ValueError(f"batch must be True, False or a count >= 1, got {batch!r}")
        reply, values = await self._ask(msgs.GetQueue, count=count,
                                        timeout=_checked_timeout(timeout))
        if reply.outcome == "timeout":
            raise TimeoutError(f"queue {self.name!r} had no item within {timeout} s")
        return values if batch is not False else values[0]

    async def qsize(self) -> int:
        reply, _ = await self._ask(msgs.Inspect, kind=self.kind)
        return int(reply.value)


# -- the synchronous facades ---------------------------------------------------------------


class _Sync:
    _async: Any

    @property
    def name(self) -> str:
        return str(self._async.name)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        client = self._async.client
        if client.runner is None:
            coro.close()
            raise TypeError(f"{type(self).__name__} needs a synchronous Client; with an "
                            f"asynchronous one, use Async{type(self).__name__}")
        return client.blocking(coro, None, f"{type(self).__name__.lower()} {self.name!r}")

    def __reduce__(self) -> Any:
        return type(self), self._async._args()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Semaphore(_Sync):
    __doc__ = AsyncSemaphore.__doc__

    def __init__(self, max_leases: int = 1, name: str | None = None, client: Any = None) -> None:
        self._async = AsyncSemaphore(max_leases, name, client)

    def acquire(self, timeout: Timeout = None) -> bool:
        """Take a lease; False if none came free within ``timeout`` seconds."""
        return self._run(self._async.acquire(timeout))

    def release(self) -> bool:
        """Give back the oldest lease taken through this object (False if it had expired)."""
        return self._run(self._async.release())

    def get_value(self) -> int:
        """How many leases are held now, by anyone."""
        return self._run(self._async.get_value())

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Lock(_Sync):
    __doc__ = AsyncLock.__doc__

    def __init__(self, name: str | None = None, client: Any = None) -> None:
        self._async = AsyncLock(name, client)

    def acquire(self, blocking: bool = True, timeout: Timeout = None) -> bool:
        """Take the lock; False if not free within ``timeout`` s (or at once, unblocking)."""
        return self._run(self._async.acquire(blocking, timeout))

    def release(self) -> bool:
        """Release the lock taken through this object (False if its lease had expired)."""
        return self._run(self._async.release())

    def locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return self._run(self._async.locked())

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Event(_Sync):
    __doc__ = AsyncEvent.__doc__

    def __init__(self, name: str | None = None, client: Any = None) -> None:
        self._async = AsyncEvent(name, client)

    def set(self) -> None:
        """Set the flag: every waiter wakes, and waits return at once until ``clear``."""
        self._run(self._async.set())

    def clear(self) -> None:
        """Clear the flag."""
        self._run(self._async.clear())

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._run(self._async.is_set())

    def wait(self, timeout: Timeout = None) -> bool:
        """Wait until the flag is set: True, or False after ``timeout`` seconds."""
        return self._run(self._async.wait(timeout))


class Variable(_Sync):
    __doc__ = AsyncVariable.__doc__

    def __init__(self, name: str | None = None, client: Any = None) -> None:
        self._async = AsyncVariable(name, client)

    def set(self, value: Any) -> None:
        """Set the value (a future's data is kept while the variable holds it)."""
        self._run(self._async.set(value))

    def get(self, timeout: Timeout = None) -> Any:
        """The value, waiting until one is set; ``TimeoutError`` after ``timeout`` s."""
        return self._run(self._async.get(timeout))

    def delete(self) -> None:
        """Remove the value (and let go of a future it held)."""
        self._run(self._async.delete())


class Queue(_Sync):
    __doc__ = AsyncQueue.__doc__

    def __init__(self, name: str | None = None, client: Any = None, maxsize: int = 0) -> None:
        self._async = AsyncQueue(name, client, maxsize)

    def put(self, value: Any, timeout: Timeout = None) -> None:
        """Append ``value``; ``TimeoutError`` if there was no room within ``timeout`` s."""
        self._run(self._async.put(value, timeout))

    def get(self, timeout: Timeout = None, batch: bool | int = False) -> Any:
        """The oldest item, waiting; ``batch=n``: a list of ``n``; ``batch=True``: all now."""
        return self._run(self._async.get(timeout, batch))

    def qsize(self) -> int:
        """How many items the queue holds now."""
        return self._run(self._async.qsize())
