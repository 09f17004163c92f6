"""A peer-to-peer shuffle's decisions: who owns which output partition, which pieces go
where, and whether an owner holds all of a partition. Pure: no I/O, no clock, no dask.

Rules (the theory of operation is in ``corral.shuffle``):

* A shuffle is placed once per run: ``place(spec, workers, run)`` orders the workers the
  scheduler knows and gives each a contiguous block of output partitions (partition
  ``p`` of ``n`` belongs to worker ``p * w // n``), so every transfer task, wherever it
  runs, sends each piece to the same owner, and the owner's unpack task is pinned there.
* Each input partition sends every owner one batch: ``{partition: piece}`` for the
  partitions it owns (empty ones left out), tagged with the input's number. An owner
  counts the inputs it has heard from, per run.
* An output partition is complete on its owner once every input has been heard from
  (a rerun transfer, after its first worker died, only overwrites what it sent before:
  a piece is keyed by input, never appended). Anything short of that is a failed run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.exceptions import ShuffleFailed


@dataclass(frozen=True, slots=True)
class ShuffleSpec:
    """What every task of one shuffle knows. ``run`` and ``owners`` are set when the
    graph is submitted (``place``); the rest when it is built."""

    name: str  # unique to the shuffle (dask's token for it)
    n_inputs: int
    npartitions: int  # output partitions
    column: Any  # the column(s) holding each row's output partition (``_partitions``)
    ignore_index: bool
    meta: Any  # an empty frame like an output partition
    parts_out: tuple[int, ...] | None = None  # the output partitions wanted; None: all
    run: str = ""
    owners: tuple[str, ...] = ()

    def owner_of(self, partition: int) -> str:
        if not self.owners:
            raise ShuffleFailed(
                f"shuffle {self.name} was never placed on workers: corral's shuffle runs "
                "only in graphs sent through a corral client (or choose "
                "shuffle_method='tasks')")
        return self.owners[partition * len(self.owners) // self.npartitions]

    def wanted(self, partition: int) -> bool:
        return self.parts_out is None or partition in self.parts_out


def place(spec: ShuffleSpec, workers: Iterable[str], run: str) -> ShuffleSpec:
    """``spec`` placed on ``workers`` (the scheduler's, now) for run ``run``."""
    owners = tuple(sorted(set(workers)))
    if not owners:
        raise ShuffleFailed(f"shuffle {spec.name}: no workers to place it on")
    return dataclasses.replace(spec, run=run, owners=owners)


def batches(spec: ShuffleSpec, pieces: Mapping[int, Any], size: Any = len) -> dict[str, list[
        tuple[int, Any]]]:
    """``pieces`` (output partition → rows of one input) grouped by owner: one batch for
    every owner of a wanted partition, even an empty one (it counts the input as heard)."""
    out: dict[str, list[tuple[int, Any]]] = {}
    for partition in range(spec.npartitions):
        if not spec.wanted(partition):
            continue
        batch = out.setdefault(spec.owner_of(partition), [])
        piece = pieces.get(partition)
        if piece is not None and size(piece):
            batch.append((partition, piece))
    return out


def owned(spec: ShuffleSpec, worker: str) -> list[int]:
    """The wanted output partitions ``worker`` owns."""
    return [p for p in range(spec.npartitions) if spec.wanted(p) and spec.owner_of(p) == worker]


def transfer_prefix(token: str, run: str = "") -> str:
    """The name of a shuffle's transfer keys (in run ``run``)."""
    return f"corral-shuffle-transfer-{token}" + (f"-{run}" if run else "")


def barrier_key(token: str, run: str = "") -> str:
    return f"corral-shuffle-barrier-{token}" + (f"-{run}" if run else "")


class Inbox:
    """One worker's bookkeeping of the shuffles it receives: which inputs each run has
    heard from, and which of its output partitions were taken (the pieces themselves
    are kept by ``corral.worker.shards``)."""

    def __init__(self) -> None:
        self.current: dict[str, str] = {}  # shuffle name → its newest run here
        self.heard: dict[tuple[str, str], set[int]] = {}  # (name, run) → inputs
        self.taken: dict[tuple[str, str], set[int]] = {}  # (name, run) → partitions

    def receive(self, name: str, run: str, input_: int) -> str | None:
        """Input ``input_`` was heard from; the older run of the same shuffle to forget
        (it failed: a newer one began), if any."""
        old = self.current.get(name)
        if old == run:
            old = None
        elif old is not None:
            self.forget(name, old)
        self.current[name] = run
        self.heard.setdefault((name, run), set()).add(input_)
        return old

    def take(self, spec: ShuffleSpec, partition: int, me: str) -> bool:
        """Whether this was the last of the run's partitions owned here (the run is
        over here, and forgotten); ``ShuffleFailed`` unless this worker owns
        ``partition``, heard from every input and did not take it before."""
        owner = spec.owner_of(partition)
        if owner != me:
            raise ShuffleFailed(f"shuffle {spec.name}: output partition {partition} belongs "
                                f"to {owner}, which is gone", worker=owner)
        heard = self.heard.get((spec.name, spec.run), set())
        if len(heard) < spec.n_inputs:
            raise ShuffleFailed(f"shuffle {spec.name}: {spec.n_inputs - len(heard)} of "
                                f"{spec.n_inputs} inputs never reached {me}")
        taken = self.taken.setdefault((spec.name, spec.run), set())
        if partition in taken:  # its pieces are gone: only a rerun of the shuffle has them
            raise ShuffleFailed(f"shuffle {spec.name}: output partition {partition} was "
                                f"unpacked on {me} before")
        taken.add(partition)
        if len(taken) < len(owned(spec, me)):
            return False
        self.forget(spec.name, spec.run)
        return True

    def forget(self, name: str, run: str) -> None:
        if self.current.get(name) == run:
            del self.current[name]
        self.heard.pop((name, run), None)
        self.taken.pop((name, run), None)
