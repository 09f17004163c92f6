"""``BatchedSend``: many small messages coalesced on one long-lived comm.

``send(msg)`` only appends to a buffer; a background task writes what is buffered as
one list. A message after a quiet spell goes out at once (no added latency); while
messages keep coming, writes are at least ``interval`` seconds apart, so a burst of N
messages costs a few writes, not N. The receiver reads lists of messages.
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
    def __init__(self, interval: float = 0.002, name: str = "") -> None:
        self.interval = interval
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
        last_write = -self.interval
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                wait = last_write + self.interval - loop.time()
                if wait > 0 and not self._stopping:
                    await asyncio.sleep(wait)  # busy: let the burst accumulate
                last_write = loop.time()
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
