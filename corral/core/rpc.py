"""Calling handlers remotely: ``rpc`` (one address) and ``ConnectionPool`` (many).

``await r.add(x=1, y=2)`` sends ``{'op': 'add', 'x': 1, 'y': 2}`` on a comm from the
pool, reads the reply, and raises the handler's exception if it raised. A call that is
cancelled or fails mid-way aborts its comm, since the stream may be out of step.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from corral.comm import Comm
from corral.comm.addressing import normalize_address
from corral.core.connect import connect
from corral.core.remote_errors import ErrorReply
from corral.security import Security


async def send_recv(comm: Comm, msg: dict[str, Any]) -> Any:
    """Write one request and return its reply, raising the remote exception if any."""
    await comm.write(msg)
    if msg.get("reply", True) is False:
        return None
    reply = await comm.read()
    if isinstance(reply, ErrorReply):
        raise reply.to_exception()
    return reply


class _RemoteOps:
    """``obj.op(**kwargs)`` → a remote call of ``op``."""

    def _call(self, op: str, kwargs: dict[str, Any]) -> Awaitable[Any]:
        raise NotImplementedError

    def __getattr__(self, op: str) -> Callable[..., Awaitable[Any]]:
        if op.startswith("_"):
            raise AttributeError(op)

        def call(**kwargs: Any) -> Awaitable[Any]:
            return self._call(op, kwargs)

        call.__name__ = op
        self.__dict__[op] = call  # later lookups skip __getattr__
        return call


class ConnectionPool:
    """Comms to many addresses, reused across calls; never more than ``limit`` open.

    ``await pool(addr).add(x=1, y=2)``. At the limit a call first closes an idle comm
    to another address, and otherwise waits for a comm to come back.
    """

    def __init__(
        self,
        limit: int = 512,
        *,
        timeout: float | None = None,
        security: Security | None = None,
        name: str = "",
        compression: str | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.timeout = timeout
        self.security = security
        self.name = name
        self.compression = compression
        self._idle: dict[str, list[Comm]] = defaultdict(list)
        self._busy: set[Comm] = set()
        self._open = 0  # idle + busy + connecting
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    @property
    def open(self) -> int:
        return self._open

    @property
    def active(self) -> int:
        return len(self._busy)

    def __call__(self, address: str) -> _PooledRPC:
        return _PooledRPC(self, normalize_address(address))

    async def acquire(self, address: str) -> Comm:
        """A comm to ``address``: an idle one if there is one, else a new one."""
        return self._take_idle(address) or await self._acquire_slow(address)

    def _take_idle(self, address: str) -> Comm | None:
        idle = self._idle.get(address)
        while idle:
            comm = idle.pop()
            if not comm.closed():
                self._busy.add(comm)
                return comm
            self._open -= 1
        return None

    async def _acquire_slow(self, address: str) -> Comm:
        while True:
            if self._closed:
                raise RuntimeError("connection pool is closed")
            comm = self._take_idle(address)
            if comm is not None:
                return comm
            if self._open < self.limit or self._evict_idle():
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._open += 1
        try:
            comm = await connect(
                address,
                timeout=self.timeout,
                security=self.security,
                name=self.name,
                compression=self.compression,
            )
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        self._busy.add(comm)
        return comm

    def release(self, address: str, comm: Comm) -> None:
        """Give a comm back; a closed one frees its slot."""
        self._busy.discard(comm)
        if comm.closed() or self._closed:
            comm.abort()
            self._open -= 1
        else:
            self._idle[address].append(comm)
        self._wake_one()

    def _evict_idle(self) -> bool:
        for comms in self._idle.values():
            if comms:
                comms.pop(0).abort()
                self._open -= 1
                return True
        return False

    def _wake_one(self) -> None:
        if not self._waiters:
            return
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    async def call(self, address: str, msg: dict[str, Any]) -> Any:
        comm = self._take_idle(address) or await self._acquire_slow(address)
        try:
            return await send_recv(comm, msg)
        except BaseException:
            comm.abort()  # the stream may be mid-message: never reuse it
            raise
        finally:
            self.release(address, comm)

    def abort(self) -> None:
        """Close every comm at once (usable without an event loop running)."""
        self._closed = True
        for comms in self._idle.values():
            for comm in comms:
                comm.abort()
        for comm in self._busy:
            comm.abort()
        self._idle.clear()
        self._open = len(self._busy)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        idle = [c for comms in self._idle.values() for c in comms]
        self.abort()
        await asyncio.gather(*(c.close() for c in idle), return_exceptions=True)

    def __repr__(self) -> str:
        return f"<ConnectionPool open={self._open}/{self.limit} active={len(self._busy)}>"


class _PooledRPC(_RemoteOps):
    def __init__(self, pool: ConnectionPool, address: str) -> None:
        self._pool = pool
        self.address = address

    def _call(self, op: str, kwargs: dict[str, Any]) -> Awaitable[Any]:
        return self._pool.call(self.address, {"op": op, **kwargs})


class rpc(_RemoteOps):
    """Call the handlers of the server at ``address``: ``await rpc(addr).add(x=1, y=2)``.

    Safe for many overlapping calls: each uses its own comm from a small pool of at most
    ``max_connections`` (calls past that wait for a free one).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        security: Security | None = None,
        name: str = "",
        compression: str | None = None,
        max_connections: int = 100,
    ) -> None:
        self.address = normalize_address(address)
        self._pool = ConnectionPool(
            max_connections, timeout=timeout, security=security, name=name, compression=compression
        )

    def _call(self, op: str, kwargs: dict[str, Any]) -> Awaitable[Any]:
        return self._pool.call(self.address, {"op": op, **kwargs})

    async def close_rpc(self) -> None:
        await self._pool.close()

    def __enter__(self) -> rpc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.abort()

    async def __aenter__(self) -> rpc:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close_rpc()

    def __repr__(self) -> str:
        return f"<rpc to {self.address}, {self._pool.open} comms>"
