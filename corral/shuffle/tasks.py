"""The task functions of a corral shuffle's graph; they run on workers
(``corral.shuffle`` explains the whole). dask is imported only here, on the worker.

A graph computed by another scheduler than a corral client (``scheduler="sync"`` or
``"threads"`` while a corral client is dask's default) was never placed: its pieces
then wait in this process (``_Local``), which is exact for any scheduler that runs all
tasks in one process; in other processes an unpack finds its pieces missing and says
to choose ``shuffle_method="tasks"``.
"""

from __future__ import annotations

import threading
from typing import Any

from corral.exceptions import ShuffleFailed
from corral.shuffle import plan
from corral.shuffle.pieces import join, split
from corral.shuffle.plan import ShuffleSpec
from corral.worker.shards import Shards


def transfer(frame: Any, spec: ShuffleSpec, input_: int) -> int:
    """Split input partition ``input_`` by output partition and send each owner its
    pieces; the number of rows sent."""
    pieces = split(frame, spec)
    if not spec.owners:
        _LOCAL.keep(spec, input_, pieces)
    else:
        _worker(spec).shuffles.send(spec, input_, plan.batches(spec, pieces))
    return len(frame)


def barrier(spec: ShuffleSpec, *sent: int) -> int:
    """Every transfer has delivered; the number of rows shuffled."""
    return sum(sent)


def unpack(rows: int, spec: ShuffleSpec, partition: int) -> Any:
    """Output partition ``partition``, from the pieces its owner (this worker) holds."""
    if not spec.owners:
        return join(_LOCAL.take(spec, partition), spec)
    return join(_worker(spec).shuffles.take(spec, partition), spec)


def _worker(spec: ShuffleSpec) -> Any:
    from corral.worker.context import current_task

    here = current_task()
    if here is None:
        raise ShuffleFailed(f"shuffle {spec.name} was placed on a corral cluster but runs "
                            "outside it; compute it with the corral client")
    return here[0]


class _Local:
    """The pieces of unplaced shuffles, in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inbox = plan.Inbox()
        self.shards = Shards(None, float("inf"))

    def keep(self, spec: ShuffleSpec, input_: int, pieces: dict[int, bytes]) -> None:
        with self.lock:
            old = self.inbox.receive(spec.name, "", input_)
            if old is not None:
                self.shards.drop(spec.name, old)
            for p, piece in pieces.items():
                self.shards.add((spec.name, "", p), input_, piece)

    def take(self, spec: ShuffleSpec, partition: int) -> list[bytes | memoryview]:
        here = plan.place(spec, ["here"], run="")
        with self.lock:
            try:
                self.inbox.take(here, partition, "here")
            except ShuffleFailed as e:
                raise ShuffleFailed(f"{e} (this scheduler ran the shuffle's tasks in "
                                    "several processes: choose shuffle_method='tasks')") from e
            return self.shards.take((spec.name, "", partition))


_LOCAL = _Local()
