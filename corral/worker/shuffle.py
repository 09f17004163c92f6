"""A worker's side of peer-to-peer shuffles: the pieces it owns, and sending pieces out.

An extension of the worker, like its plugins (``corral.worker.plugins``): the decisions
are ``corral.shuffle.plan``'s (``Inbox``); this holds the I/O.

* ``shuffle_receive`` (a peer's batch, on the event loop): its pieces join their output
  partitions in ``Shards``, held in memory up to a tenth of the memory limit and then
  appended to one file per partition under the worker's local directory. The batch is
  acknowledged once any such write is done, so a sender waits for a busy disk
  (back-pressure) instead of piling pieces up in this worker's memory.
* ``send`` (a transfer task's thread): one batch to every owner, all at once, each over
  the worker's connection pool; the task's thread waits for every acknowledgement, so a
  transfer that finished has delivered. A batch for this worker is stored, not sent.
* ``take`` (an unpack task's thread): the pieces of an output partition, in input
  order, read back from disk on that thread, then forgotten.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from corral.exceptions import CommError, ShuffleFailed
from corral.shuffle.plan import Inbox, ShuffleSpec
from corral.worker.shards import Shards

if TYPE_CHECKING:
    from corral.worker.server import Worker



class ShuffleExtension:
    BUDGET = 0.1  # of the memory limit: pieces held in memory before they go to disk

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.inbox = Inbox()
        self.shards = Shards(None, float("inf"))
        self.received_bytes = 0  # bytes of pieces that came from peers
        self._writes: set[asyncio.Future[None]] = set()

    def start(self, local_directory: str, memory_limit: int) -> None:
        if memory_limit:
            self.shards = Shards(os.path.join(local_directory, "shuffle"),
                                 self.BUDGET * memory_limit)

    def handlers(self) -> dict[str, Any]:
        return {"shuffle_receive": self.receive}

    # -- on the event loop ---------------------------------------------------------------

    async def receive(self, comm: Any, name: str, run: str, input: int,
                      parts: list[tuple[int, bytes]]) -> int:
        """A peer's batch for the output partitions owned here; the number of pieces."""
        self.received_bytes += await self._store(name, run, input, parts)
        return len(parts)

    async def _store(self, name: str, run: str, input_: int,
                     parts: list[tuple[int, bytes]]) -> int:
        """Keep a batch's pieces (on disk if memory is short); their bytes."""
        old = self.inbox.receive(name, run, input_)
        if old is not None:
            await asyncio.to_thread(self.shards.drop, name, old)
        nbytes = sum(self.shards.add((name, run, p), input_, piece) for p, piece in parts)
        if self.shards.full:
            await asyncio.to_thread(self.shards.flush)
        return nbytes

    def forget_all(self) -> None:
        """The worker starts afresh: every shuffle's pieces go (a rerun resends them)."""
        self.inbox = Inbox()
        self._in_thread(self.shards.clear)

    def spill(self) -> None:
        """Memory is short: write every piece held in memory to disk, on a thread."""
        if self.shards.in_memory and self.shards.directory:
            self._in_thread(self.shards.flush)

    def _in_thread(self, work: Callable[[], None]) -> None:
        task = asyncio.ensure_future(asyncio.to_thread(work))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _send_all(self, spec: ShuffleSpec, input_: int,
                        batches: dict[str, list[tuple[int, bytes]]]) -> None:
        async def one(address: str, parts: list[tuple[int, bytes]]) -> None:
            try:
                await self.worker.pool(address).shuffle_receive(
                    name=spec.name, run=spec.run, input=input_, parts=parts)
            except (CommError, OSError) as e:
                raise ShuffleFailed(f"shuffle {spec.name}: cannot send to {address}: "
                                    f"{type(e).__name__}: {e}", worker=address) from e

        mine = batches.pop(self.worker.address, None)
        sends: list[Awaitable[object]] = [one(a, parts) for a, parts in batches.items()]
        if mine is not None:
            sends.append(self._store(spec.name, spec.run, input_, mine))
        await asyncio.gather(*sends)

    # -- on a task's thread --------------------------------------------------------------

    def send(self, spec: ShuffleSpec, input_: int,
             batches: dict[str, list[tuple[int, bytes]]]) -> None:
        """Deliver one input's batches to their owners; returns once all acknowledged."""
        self._on_loop(lambda: self._send_all(spec, input_, batches))

    def take(self, spec: ShuffleSpec, partition: int) -> list[bytes | memoryview]:
        """Output partition ``partition``'s pieces, in input order; they are forgotten."""

        async def claim() -> bool:
            return self.inbox.take(spec, partition, self.worker.address)

        last = self._on_loop(claim)
        pieces = self.shards.take((spec.name, spec.run, partition))  # may read the disk
        if last:
            self.shards.drop(spec.name, spec.run)
        return pieces
    def _on_loop(self, make: Callable[[], Any]) -> Any:
        loop = self.worker.loop
        if loop is None:
            raise ShuffleFailed("the worker is not running")
        return asyncio.run_coroutine_threadsafe(make(), loop).result()
