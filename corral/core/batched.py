"""``BatchedSend``: many small messages coalesced on one long-lived comm.

``send(msg)`` only appends to a buffer; a background task writes what is buffered as
one list, one loop turn after the first message (so what one handler sends goes as one
write). The first ``burst`` writes in any ``interval`` go out at once: a request and its
answer trading single messages (``submit(...).result()`` in a loop, each hop of which
is a stream) never wait for the interval. Beyond that the stream is busy, and writes
are ``interval`` seconds apart, so a flood of N messages costs a few writes, not N.
The receiver reads lists of messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.messages_sent = 0
        self.batches_sent = 0

    def start(self, comm: Comm) -> None:
        if self._task is not None:
            raise RuntimeError("BatchedSend already started")
        self.comm = comm
        self._task = asyncio.ensure_future(self._run())

    def send(self, *msgs: Any) -> None:
        """Queue messages; never blocks. Raises ``CommClosedError`` once the comm is gone."""
        if self._stopping or (self.comm is not None and self.comm.closed()):
            raise CommClosedError(f"batched stream {self.name or ''} is closed")
        self._buffer.extend(msgs)
        self._wake.set()

    async def _run(self) -> None:
        assert self.comm is not None
        loop = asyncio.get_running_loop()
        window_start, writes_in_window = -self.interval, 0
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                now = loop.time()
                if now - window_start >= self.interval:
                    window_start, writes_in_window = now, 0
                if writes_in_window >= self.burst and not self._stopping:
                    # busy: let the flood accumulate until this window ends
                    await asyncio.sleep(window_start + self.interval - now)
                    window_start, writes_in_window = loop.time(), 0
                else:
                    await asyncio.sleep(0)  # the rest of this loop turn's messages join
                writes_in_window += 1
                if self._buffer:
                    batch, self._buffer = self._buffer, []
                    try:
                        await self.comm.write(batch)
                    except CommClosedError:
                        self._buffer[:0] = batch  # may not have arrived: see ``unsent``
                        raise
                    self.messages_sent += len(batch)
                    self.batches_sent += 1
                if self._stopping and not self._buffer:
                    return
        except CommClosedError:
            logger.debug("batched stream %s: comm closed", self.name)
            self._stopping = True

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered, then close the comm."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
            except asyncio.CancelledError:
                if not self._task.cancelled():
                    raise  # we were cancelled, not the writer (which ``abort`` may stop)
        if self.comm is not None:
            with contextlib.suppress(CommError):
                await self.comm.close()

    def unsent(self) -> list[Any]:
        """Messages not (surely) written before the comm died, to resend on a new stream."""
        return list(self._buffer)

    def abort(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        if self.comm is not None:
            self.comm.abort()
