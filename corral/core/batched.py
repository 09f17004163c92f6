"""``BatchedSend``: many small messages coalesced on one long-lived comm.

``send(msg)`` only appends to a buffer and, if no write is due yet, asks the loop to
flush at the end of this loop turn (``call_soon``): what one handler sends goes as one
write, and the write goes straight to the socket (``Comm.write_nowait``) with no task
or event in between. The first ``burst`` writes in any ``interval`` go out that way: a
request and its answer trading single messages (``submit(...).result()`` in a loop, each
hop of which is a stream) never wait for the interval. Beyond that the stream is busy,
and writes are ``interval`` seconds apart, so a flood of N messages costs a few writes,
not N. A write the transport cannot take at once (the peer is behind, or frames go
through shared memory) finishes in a task, and sends meanwhile wait for it.
``send_later(msg)`` is for messages nobody waits on (a client letting go of a key): they
go with the next write, or ``interval`` seconds later if no other message comes, so a
release and the request that follows it travel together (one wake-up of the peer, and
of the peers it answers, instead of two). ``withdraw(msg)`` takes back a message still
queued that became moot (a task's start report when its result is about to follow).
The receiver reads lists of messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable
from typing import Any

from corral.comm import Comm
from corral.exceptions import CommClosedError, CommError

logger = logging.getLogger("corral.core")


class BatchedSend:
    def __init__(self, interval: float = 0.002, name: str = "", burst: int = 4) -> None:
        self.interval = interval
        self.burst = burst
        self.name = name
        self.comm: Comm | None = None
        self._buffer: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_due: asyncio.Handle | None = None  # a flush this turn or after a wait
        self._flush_late: asyncio.TimerHandle | None = None  # for send_later's messages
        self._writing: asyncio.Task[None] | None = None  # a write the transport made wait
        self._window_start = -interval
        self._writes_in_window = 0
        self._stopping = False
        self._broken = False  # a write failed: the comm is gone
        self.messages_sent = 0
        self.batches_sent = 0

    def start(self, comm: Comm) -> None:
        if self._loop is not None:
            raise RuntimeError("BatchedSend already started")
        self.comm = comm
        self._loop = asyncio.get_running_loop()
        if self._buffer:
            self._flush_soon()

    def send(self, *msgs: Any) -> None:
        """Queue messages; never blocks. Raises ``CommClosedError`` once the comm is gone."""
        self._check_open()
        self._buffer.extend(msgs)
        self._flush_soon()

    def send_later(self, *msgs: Any) -> None:
        """Queue messages that may wait: they go with the next write, and at most
        ``interval`` seconds from now."""
        self._check_open()
        self._buffer.extend(msgs)
        if (self._flush_due is None and self._flush_late is None and self._writing is None
                and self._loop is not None):
            self._flush_late = self._loop.call_later(self.interval, self._flush_if_idle)

    def withdraw(self, msg: Any) -> bool:
        """Take back ``msg`` (the very object) if it is still queued, because it became
        moot before it went; False if it was written already (or never queued)."""
        buffer = self._buffer
        for i in range(len(buffer) - 1, -1, -1):  # the newest first: it is usually recent
            if buffer[i] is msg:
                del buffer[i]
                return True
        return False

    def _check_open(self) -> None:
        if self._stopping or (self.comm is not None and self.comm.closed()):
            raise CommClosedError(f"batched stream {self.name or ''} is closed")

    def _flush_if_idle(self) -> None:
        self._flush_late = None
        if self._flush_due is None:
            self._flush()

    def _flush_soon(self) -> None:
        """Flush at the end of this loop turn, unless a flush or a write is already due."""
        if self._flush_due is None and self._writing is None and self._loop is not None:
            self._flush_due = self._loop.call_soon(self._flush)

    def _cancel_flushes(self) -> None:
        for handle in (self._flush_due, self._flush_late):
            if handle is not None:
                handle.cancel()
        self._flush_due = self._flush_late = None

    def _flush(self) -> None:
        self._flush_due = None
        if self._flush_late is not None:  # what send_later queued goes now
            self._flush_late.cancel()
            self._flush_late = None
        if not self._buffer or self._writing is not None or self._broken:
            return
        assert self._loop is not None
        assert self.comm is not None
        now = self._loop.time()
        if now - self._window_start >= self.interval:
            self._window_start, self._writes_in_window = now, 0
        if self._writes_in_window >= self.burst and not self._stopping:
            # busy: let the flood accumulate until this window ends
            self._flush_due = self._loop.call_at(self._window_start + self.interval,
                                                 self._flush)
            return
        self._writes_in_window += 1
        batch, self._buffer = self._buffer, []
        try:
            pending = self.comm.write_nowait(batch)
        except Exception as e:
            self._failed(batch, e)
            return
        if pending is None:
            self._sent(batch)
        else:
            task = self._writing = asyncio.ensure_future(self._finish_write(pending, batch))
            task.add_done_callback(functools.partial(self._write_done, pending, batch))

    async def _finish_write(self, pending: Awaitable[None], batch: list[Any]) -> None:
        try:
            await pending
        except Exception as e:
            self._failed(batch, e)
            return
        self._sent(batch)

    def _write_done(self, pending: Awaitable[None], batch: list[Any],
                    task: asyncio.Task[None]) -> None:
        if task.cancelled():  # by abort(): the batch may not have gone
            self._buffer[:0] = batch
            if inspect.iscoroutine(pending):
                pending.close()  # cancelled before it began: no "never awaited" warning
        if self._writing is task:
            self._writing = None
            if self._buffer and not self._broken:
                self._flush_soon()

    def _sent(self, batch: list[Any]) -> None:
        self.messages_sent += len(batch)
        self.batches_sent += 1

    def _failed(self, batch: list[Any], error: Exception) -> None:
        if isinstance(error, CommClosedError):
            self._lost(batch)
        else:  # a message that cannot be encoded: the others still go
            logger.error("batched stream %s: dropping a batch that cannot be written",
                         self.name, exc_info=error)

    def _lost(self, batch: list[Any]) -> None:
        logger.debug("batched stream %s: comm closed", self.name)
        self._buffer[:0] = batch  # may not have arrived: see ``unsent``
        self._broken = self._stopping = True

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered, then close the comm."""
        self._stopping = True
        self._cancel_flushes()
        try:
            async with asyncio.timeout(timeout):
                while self.comm is not None:
                    if self._writing is not None and not self._writing.done():
                        await asyncio.wait([self._writing])  # cancelled by abort(): fine
                    elif self._writing is not None:
                        self._writing = None  # done; its callback has yet to run
                    elif self._buffer and not self._broken and not self.comm.closed():
                        self._flush()  # stopping: no waiting for the interval
                    else:
                        break
        except TimeoutError:
            if self._writing is not None:
                self._writing.cancel()
        if self.comm is not None:
            with contextlib.suppress(CommError):
                await self.comm.close()

    def unsent(self) -> list[Any]:
        """Messages not (surely) written before the comm died, to resend on a new stream."""
        return list(self._buffer)

    def abort(self) -> None:
        self._stopping = True
        self._cancel_flushes()
        if self._writing is not None:
            self._writing.cancel()
        if self.comm is not None:
            self.comm.abort()
