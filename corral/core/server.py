"""``Server``: accept connections, run the handshake, dispatch ``{'op': ...}`` messages.

Each connection is served by one task: it reads a message, calls the handler named by
its ``op`` with the rest of the message as keyword arguments, and writes the return
value back (unless ``reply=False``). A handler that writes on the comm itself and
returns ``None`` is a streaming handler: nothing more is written for it.

A client's mistake — an unknown op, bad arguments, a handler that raises, a message
that does not decode — comes back to that client as an error reply. A peer that breaks
the wire protocol, or fails the handshake, loses its own connection and nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from corral import comm as transport
from corral import config
from corral.comm import DEFAULT_LIMITS, PRE_AUTH_LIMITS, Comm, FrameLimits, Listener, shm
from corral.comm.addressing import parse_address
from corral.core.remote_errors import ErrorReply
from corral.exceptions import (
    AuthenticationError,
    CommClosedError,
    CommError,
    DeserializationError,
    FrameLimitError,
    HandshakeError,
    ProtocolError,
    UnknownOperationError,
    VersionMismatchError,
)
from corral.protocol import ConnectionOptions, server_handshake
from corral.refusals import RefusalLog
from corral.security import Security

logger = logging.getLogger("corral.core")

Handler = Callable[..., Any]


class Server:
    """Dispatches messages from many connections to ``handlers`` (see the module docstring).

    ``security`` with a token makes every peer authenticate before anything it sends
    is unpickled. ``handshake_timeout`` bounds how long a peer may take to finish the
    handshake, and at most ``max_pending_handshakes`` connections may be in handshake at
    once: past that the oldest is dropped, so idle peers cannot crowd out honest ones.
    ``shared_memory=True`` offers peers on this host a shared-memory side channel for
    large frames, when ``comm.shared-memory.enabled`` (``corral.comm.shm``).
    """

    def __init__(
        self,
        handlers: dict[str, Handler],
        *,
        security: Security | None = None,
        name: str = "",
        role: str = "server",
        compression: str | None = None,
        limits: FrameLimits = DEFAULT_LIMITS,
        pre_auth_limits: FrameLimits = PRE_AUTH_LIMITS,
        handshake_timeout: float = 10.0,
        max_pending_handshakes: int = 256,
        shared_memory: bool = False,
    ) -> None:
        self.handlers: dict[str, Handler] = dict(handlers)
        self.security = security
        self._options = ConnectionOptions(
            security=security, role=role, name=name, compression=compression, limits=limits
        )
        self._pre_auth_limits = pre_auth_limits
        self.handshake_timeout = handshake_timeout
        self.max_pending_handshakes = max_pending_handshakes
        self.listeners: list[Listener] = []
        self._comms: dict[Comm, asyncio.Task[None]] = {}
        self._pending: OrderedDict[Comm, None] = OrderedDict()  # in handshake, oldest first
        self._refusals = RefusalLog(logger, "handshakes")
        self._closed = False
        self._share = shared_memory
        self.shared_listener: shm.SharedListener | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def listen(self, address: str | int = "tcp://127.0.0.1:0") -> None:
        """Start accepting connections at ``address`` (a port number, ``'tcp://:8786'``, ...)."""
        if self._closed:
            raise RuntimeError("server is closed")
        if self._share and self.shared_listener is None and shm.enabled():
            shared = shm.SharedListener()
            try:
                shared.start()
            except OSError as e:
                logger.info("no shared memory for peers on this host: %s", e)
            else:
                self.shared_listener = shared
                self._options = dataclasses.replace(self._options, shared_listener=shared)
        tls = self.security.ssl_context(server_side=True) if self.security else None
        listener = await transport.listen(
            address, self._on_comm, limits=self._pre_auth_limits, tls=tls,
            shortcut_alias=config.get("comm.inproc-shortcut"),
        )
        self.listeners.append(listener)

    @property
    def address(self) -> str:
        if not self.listeners:
            raise ValueError("server is not listening")
        return self.listeners[0].address

    @property
    def port(self) -> int | None:
        return parse_address(self.address).port

    async def close(self) -> None:
        """Stop listening, close every connection and cancel running handlers."""
        self._closed = True
        self._refusals.close()
        if self.shared_listener is not None:
            self.shared_listener.stop()
        for listener in self.listeners:
            await listener.stop()
        tasks = list(self._comms.values())
        for comm, task in list(self._comms.items()):
            comm.abort()
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connections -------------------------------------------------------------------

    def _on_comm(self, comm: Comm) -> None:
        if self._closed:
            comm.abort()
            return
        self._comms[comm] = asyncio.ensure_future(self._serve(comm))

    async def _serve(self, comm: Comm) -> None:
        try:
            if await self._handshake(comm):
                await self.handle_comm(comm)
        except asyncio.CancelledError:
            comm.abort()
            raise
        finally:
            self._comms.pop(comm, None)
            if not comm.closed():
                comm.abort()

    async def _handshake(self, comm: Comm) -> bool:
        self._pending[comm] = None
        if len(self._pending) > self.max_pending_handshakes:
            oldest, _ = self._pending.popitem(last=False)
            self._refusals.refuse("backlog full", "too many connections in handshake; dropping "
                                  "the oldest, from %s", oldest.peer_address)
            oldest.abort()
        try:
            async with asyncio.timeout(self.handshake_timeout):
                await server_handshake(comm, self._options)
            return True
        except TimeoutError:
            self._refusals.refuse("handshake timeout", "dropping %s: handshake not finished "
                                  "in time", comm.peer_address, level=logging.INFO)
        except (HandshakeError, ProtocolError) as e:
            if not isinstance(e, HandshakeError) or not isinstance(e.__cause__, CommClosedError):
                self._refusals.refuse(_cause(e), "rejected connection from %s: %s",
                                      comm.peer_address, e)
        except CommError:
            pass
        except Exception as e:  # a bug of ours must cost this peer only
            self._refusals.refuse("handshake bug", "rejected connection from %s: handshake "
                                  "failed: %s", comm.peer_address, e, level=logging.ERROR,
                                  exc_info=True)
        finally:
            self._pending.pop(comm, None)
        return False

    async def handle_comm(self, comm: Comm) -> None:
        """Serve requests on an authenticated comm until it closes."""
        while True:
            try:
                msg = await comm.read()
            except CommClosedError:
                return
            except DeserializationError as e:
                # The message was framed correctly, so the stream is still in step.
                if not await self._reply(comm, ErrorReply.from_exception(e)):
                    return
                continue
            except ProtocolError as e:
                logger.warning("closing connection from %s: %s", comm.peer_address, e)
                return
            if not await self._dispatch(comm, msg):
                return

    async def _dispatch(self, comm: Comm, msg: Any) -> bool:
        """Handle one message; False once the comm is finished."""
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            error = ProtocolError(f"expected a dict with an 'op' key, got {type(msg).__name__}")
            return await self._reply(comm, ErrorReply.from_exception(error))
        msg = dict(msg)
        op = msg.pop("op")
        wants_reply = msg.pop("reply", True)
        close_after = msg.pop("close", False)
        written_before = comm.messages_written
        try:
            handler = self.handlers[op]
        except KeyError:
            result: Any = ErrorReply.from_exception(
                UnknownOperationError(f"unknown operation {op!r}")
            )
        else:
            try:
                result = handler(comm, **msg)
                if inspect.isawaitable(result):
                    result = await result
            except CommClosedError:
                return False  # a streaming handler's peer went away
            except Exception as e:
                logger.debug("handler %r raised", op, exc_info=True)
                result = ErrorReply.from_exception(e)
        streamed = comm.messages_written != written_before and result is None
        if wants_reply and not streamed and not await self._reply(comm, result):
            return False
        if close_after:
            await comm.close()
            return False
        return True

    async def _reply(self, comm: Comm, result: Any) -> bool:
        try:
            await comm.write(result)
            return True
        except CommClosedError:
            return False
        except Exception as e:  # the result itself does not serialize
            try:
                await comm.write(ErrorReply.from_exception(e))
                return True
            except CommClosedError:
                return False

    def __repr__(self) -> str:
        where = self.listeners[0].address if self.listeners else "not listening"
        return f"<Server {where} connections={len(self._comms)}>"


# The cause a refusal is counted under in summaries, most specific type first.
_CAUSES = ((AuthenticationError, "authentication failed"),
           (VersionMismatchError, "not corral or another version"),
           (FrameLimitError, "over the frame limits"), (HandshakeError, "refused"),
           (ProtocolError, "malformed"))


def _cause(error: Exception) -> str:
    return next(cause for kind, cause in _CAUSES if isinstance(error, kind))
