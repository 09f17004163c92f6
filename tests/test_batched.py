"""``BatchedSend`` on a fake comm: when it writes at once and when it batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from corral.core import BatchedSend
from corral.exceptions import CommClosedError


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


def started(comm: FakeComm, **options: Any) -> BatchedSend:
    """A ``BatchedSend`` writing to ``comm``, started on the running loop."""
    stream = BatchedSend(**options)
    stream.start(comm)  # type: ignore[arg-type]
    return stream


async def test_idle_stream_writes_each_message_at_once() -> None:
    """Single messages traded back and forth (a request, then the next one as soon as
    its answer came) never wait for the interval: here it is a minute."""
    comm = FakeComm()
    stream = started(comm, interval=60.0)
    for i in range(3):
        comm.wrote.clear()
        stream.send({"i": i})
        await asyncio.wait_for(comm.wrote.wait(), 5)
    assert comm.batches == [[{"i": 0}], [{"i": 1}], [{"i": 2}]]
    stream.abort()


async def test_same_turn_messages_share_a_write() -> None:
    comm = FakeComm()
    stream = started(comm, interval=60.0)
    stream.send({"i": 0})
    stream.send({"i": 1}, {"i": 2})
    await asyncio.wait_for(comm.wrote.wait(), 5)
    assert comm.batches == [[{"i": 0}, {"i": 1}, {"i": 2}]]
    stream.abort()


async def test_busy_stream_batches_beyond_the_burst() -> None:
    """A message every loop turn: after ``burst`` writes, the rest wait out the interval
    and go together."""
    comm = FakeComm()
    stream = started(comm, interval=0.2, burst=4)
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


class WaitingComm(FakeComm):
    """A transport that can never write at once: each write finishes in a task, after
    ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    def write_nowait(self, msg: Any) -> Awaitable[None] | None:
        return self._write_later(msg)

    async def _write_later(self, msg: Any) -> None:
        await self.release.wait()
        await self.write(msg)


async def test_write_straight_to_the_comm_in_the_same_loop_turn() -> None:
    """The flush runs in the loop turn after the sends (``call_soon``): no task, no
    event; nothing is written before the sending code yields."""
    comm = FakeComm()
    stream = started(comm, interval=60.0)
    stream.send({"i": 0})
    assert comm.batches == []  # the rest of this turn's messages may still join
    await asyncio.sleep(0)
    assert comm.batches == [[{"i": 0}]]
    assert (stream.messages_sent, stream.batches_sent) == (1, 1)
    stream.abort()


async def test_a_write_that_must_wait_holds_the_next_ones_in_order() -> None:
    comm = WaitingComm()
    stream = started(comm, interval=60.0)
    stream.send({"i": 0})
    await asyncio.sleep(0)  # flushed: the write waits on the transport
    stream.send({"i": 1})
    stream.send({"i": 2})
    await asyncio.sleep(0)
    assert comm.batches == []
    comm.release.set()
    async with asyncio.timeout(5):
        while sum(len(b) for b in comm.batches) < 3:
            comm.wrote.clear()
            await comm.wrote.wait()
    assert comm.batches == [[{"i": 0}], [{"i": 1}, {"i": 2}]]
    await stream.close()


async def test_close_flushes_what_waits_then_refuses_more() -> None:
    comm = WaitingComm()
    stream = started(comm, interval=60.0, burst=1)
    stream.send({"i": 0})
    await asyncio.sleep(0)
    stream.send({"i": 1})  # behind the waiting write (and beyond the burst)
    comm.release.set()
    await asyncio.wait_for(stream.close(), 5)
    assert [m["i"] for b in comm.batches for m in b] == [0, 1]
    with pytest.raises(CommClosedError):
        stream.send({"i": 2})


async def test_abort_while_a_write_waits_leaves_it_unsent() -> None:
    comm = WaitingComm()
    stream = started(comm, interval=60.0)
    stream.send({"i": 0})
    await asyncio.sleep(0)
    stream.abort()
    await asyncio.wait_for(stream.close(), 5)  # returns: nothing left to wait for
    assert comm.batches == []
    assert stream.unsent() == [{"i": 0}]  # to send again on a new stream


async def test_send_later_waits_for_the_next_message() -> None:
    """A message nobody waits on (a release) goes with the next one sent, in order."""
    comm = FakeComm()
    stream = started(comm, interval=60.0)
    stream.send_later({"release": 1})
    for _ in range(3):
        await asyncio.sleep(0)
    assert comm.batches == []  # not worth a write of its own
    stream.send({"submit": 2})
    await asyncio.wait_for(comm.wrote.wait(), 5)
    assert comm.batches == [[{"release": 1}, {"submit": 2}]]
    stream.abort()


async def test_send_later_goes_alone_after_the_interval() -> None:
    comm = FakeComm()
    stream = started(comm, interval=0.05)
    stream.send_later({"release": 1})
    await asyncio.wait_for(comm.wrote.wait(), 5)
    assert comm.batches == [[{"release": 1}]]
    stream.abort()


async def test_close_sends_what_waits_for_later() -> None:
    comm = FakeComm()
    stream = started(comm, interval=60.0)
    stream.send_later({"release": 1})
    await asyncio.wait_for(stream.close(), 5)
    assert comm.batches == [[{"release": 1}]]


async def test_withdraw_takes_back_a_queued_message_but_not_a_written_one() -> None:
    """A start report still queued when its task's result follows is taken back; one
    already written is not (and an equal dict that is not the same object is left)."""
    comm = FakeComm()
    stream = started(comm, interval=60.0)
    started_a, started_b = {"started": "a"}, {"started": "b"}
    stream.send_later(started_a)
    stream.send_later(started_b)
    assert stream.withdraw({"started": "a"}) is False  # equal is not enough
    assert stream.withdraw(started_a) is True
    assert stream.withdraw(started_a) is False  # already taken back
    stream.send({"finished": "a"})
    await asyncio.wait_for(comm.wrote.wait(), 5)
    assert comm.batches == [[{"started": "b"}, {"finished": "a"}]]
    assert stream.withdraw(started_b) is False  # written: too late
    stream.abort()
