"""A worker's side of peer-to-peer shuffles: the pieces it owns, and sending pieces out.

An extension of the worker, like its plugins (``corral.worker.plugins``): the decisions
are ``corral.shuffle.plan``'s (``Inbox``); this holds the I/O.

* ``shuffle_receive`` (a peer's batch, on the event loop): each piece goes into the
  worker's own data store under a key of its own (``plan.piece_key``), so the memory
  manager counts it and spills it to the worker's local directory, least recently used
  first, like any result; the scheduler never hears of these keys.
* ``send`` (a transfer task's thread): one batch to every owner, all at once, each over
  the worker's connection pool; the task's thread waits for every acknowledgement, so a
  transfer that finished has delivered. A batch for this worker is stored, not sent.
* ``take`` (an unpack task's thread): the pieces of an output partition, in input
  order, read back from disk on that thread if they were spilled, then dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from corral.exceptions import CommError, ShuffleFailed
from corral.shuffle.plan import Inbox, ShuffleSpec

if TYPE_CHECKING:
    from corral.worker.server import Worker

logger = logging.getLogger("corral.worker.shuffle")
T = TypeVar("T")


class ShuffleExtension:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.inbox = Inbox()
        self.received_bytes = 0  # bytes of pieces that came from peers

    def handlers(self) -> dict[str, Any]:
        return {"shuffle_receive": self.receive}

    # -- on the event loop ---------------------------------------------------------------

    def receive(self, comm: Any, name: str, run: str, input: int,
                parts: list[tuple[int, Any]]) -> int:
        """A peer's batch for the output partitions owned here; the number of pieces."""
        from corral.sizeof import sizeof

        self.received_bytes += sum(sizeof(piece) for _, piece in parts)
        self._store(name, run, input, parts)
        return len(parts)

    def _store(self, name: str, run: str, input_: int, parts: list[tuple[int, Any]]) -> None:
        keys, dropped = self.inbox.receive(name, run, input_, [p for p, _ in parts])
        data = self.worker.data
        for key in dropped:
            data.pop(key, None)
        for key, (_, piece) in zip(keys, parts, strict=True):
            data[key] = piece

    async def _send_all(self, spec: ShuffleSpec, input_: int,
                        batches: dict[str, list[tuple[int, Any]]]) -> None:
        async def one(address: str, parts: list[tuple[int, Any]]) -> None:
            try:
                await self.worker.pool(address).shuffle_receive(
                    name=spec.name, run=spec.run, input=input_, parts=parts)
            except (CommError, OSError) as e:
                raise ShuffleFailed(f"shuffle {spec.name}: cannot send to {address}: "
                                    f"{type(e).__name__}: {e}", worker=address) from e

        mine = batches.pop(self.worker.address, None)
        if mine is not None:
            self._store(spec.name, spec.run, input_, mine)
        await asyncio.gather(*(one(a, parts) for a, parts in batches.items()))

    # -- on a task's thread --------------------------------------------------------------

    def send(self, spec: ShuffleSpec, input_: int,
             batches: dict[str, list[tuple[int, Any]]]) -> None:
        """Deliver one input's batches to their owners; returns once all acknowledged."""
        self._on_loop(lambda: self._send_all(spec, input_, batches))

    def take(self, spec: ShuffleSpec, partition: int) -> list[Any]:
        """Output partition ``partition``'s pieces, in input order; they leave the store."""

        async def claim() -> list[Any]:
            return self.inbox.take(spec, partition, self.worker.address)

        keys = self._on_loop(claim)
        data = self.worker.data
        try:
            pieces = [data[key] for key in keys]  # may read back from disk: not the loop
        except KeyError as e:  # the store was cleared (the worker restarted its state)
            raise ShuffleFailed(f"shuffle {spec.name}: a piece of output partition "
                                f"{partition} is gone from {self.worker.address}",
                                worker=self.worker.address) from e

        async def drop() -> None:
            for key in keys:
                data.pop(key, None)

        self._on_loop(drop)
        return pieces

    def _on_loop(self, make: Callable[[], Any]) -> Any:
        loop = self.worker.loop
        if loop is None:
            raise ShuffleFailed("the worker is not running")
        return asyncio.run_coroutine_threadsafe(make(), loop).result()
