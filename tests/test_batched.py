"""``BatchedSend`` on a fake comm: when it writes at once and when it batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from corral.core import BatchedSend


class FakeComm:
    """Records each write (one batch); never blocks."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.wrote = asyncio.Event()

    async def write(self, msg: Any) -> None:
        self.batches.append(msg)
        self.wrote.set()

    def write_nowait(self, msg: Any) -> Awaitable[None] | None:
        self.batches.append(msg)
        self.wrote.set()
        return None

    def closed(self) -> bool:
        return False

    async def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def test_idle_stream_writes_each_message_at_once() -> None:
    """Single messages traded back and forth (a request, then the next one as soon as
    its answer came) never wait for the interval: here it is a minute."""
    comm = FakeComm()
    stream = BatchedSend(interval=60.0)
    stream.start(comm)  # type: ignore[arg-type]
    for i in range(3):
        comm.wrote.clear()
        stream.send({"i": i})
        await asyncio.wait_for(comm.wrote.wait(), 5)
    assert comm.batches == [[{"i": 0}], [{"i": 1}], [{"i": 2}]]
    stream.abort()


async def test_same_turn_messages_share_a_write() -> None:
    comm = FakeComm()
    stream = BatchedSend(interval=60.0)
    stream.start(comm)  # type: ignore[arg-type]
    stream.send({"i": 0})
    stream.send({"i": 1}, {"i": 2})
    await asyncio.wait_for(comm.wrote.wait(), 5)
    assert comm.batches == [[{"i": 0}, {"i": 1}, {"i": 2}]]
    stream.abort()


async def test_busy_stream_batches_beyond_the_burst() -> None:
    """A message every loop turn: after ``burst`` writes, the rest wait out the interval
    and go together."""
    comm = FakeComm()
    stream = BatchedSend(interval=0.2, burst=4)
    stream.start(comm)  # type: ignore[arg-type]
    for i in range(200):
        stream.send({"i": i})
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        while sum(len(b) for b in comm.batches) < 200:
            comm.wrote.clear()
            await comm.wrote.wait()
    assert [m["i"] for b in comm.batches for m in b] == list(range(200))
    assert len(comm.batches) <= 4 + 3  # the burst, then one write per interval
    stream.abort()
