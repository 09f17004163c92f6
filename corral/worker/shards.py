"""The pieces of the shuffle output partitions a worker owns, grouped by partition.

A shuffle of ``n`` inputs into ``n`` outputs makes ``n²`` pieces, most of them small:
storing each as a value of its own (one file each when spilled) costs a file creation,
a write, a read and a deletion per piece, which grows with the square of the
partitions. ``Shards`` keeps one group per output partition instead. Pieces are bytes
(``corral.shuffle.pieces`` makes and reads them, on task threads): nothing is pickled or
unpickled here or on the event loop, however often a piece moves.

* pieces arrive (``add``, on the event loop: no I/O) into memory, keyed by their input,
  so that a transfer that ran twice overwrites what it sent before;
* once more than ``budget`` bytes are held, ``flush`` (on a thread) appends every
  partition's pieces as one record to that partition's file under ``directory``: one
  append per partition per flush, however many pieces there were;
* ``take`` (on the unpack task's thread) reads a partition's file back, later records
  overriding earlier ones, adds what is still in memory, and forgets the partition.

A write that fails (a full disk) leaves the pieces in memory; it is logged once, until
a whole flush works again.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import struct
import threading
from collections.abc import Iterator

import msgpack

logger = logging.getLogger("corral.worker.shards")

Partition = tuple[str, str, int]  # (shuffle name, run, output partition)
_LENGTH = struct.Struct("<Q")


class Shards:
    def __init__(self, directory: str | None, budget: float) -> None:
        self.directory = directory  # None: never written to disk
        self.budget = budget if directory else float("inf")
        self.in_memory = 0  # bytes of the pieces held in memory
        self.on_disk = 0  # bytes of the records in files
        self.written_total = 0  # bytes ever written
        self.write_error: str | None = None  # the last failed write, until one works
        self._pieces: dict[Partition, dict[int, bytes]] = {}
        self._sizes: dict[Partition, int] = {}
        self._files: dict[Partition, int] = {}  # bytes in each partition's file
        self._runs: dict[tuple[str, str], str] = {}  # (name, run) → its directory
        self._writing: set[Partition] = set()
        self._numbers = itertools.count()  # a run's directory is its number
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)

    def add(self, partition: Partition, input_: int, piece: bytes) -> int:
        """Keep a piece in memory; its size."""
        nbytes = len(piece)
        with self._lock:
            pieces = self._pieces.setdefault(partition, {})
            old = pieces.get(input_)
            if old is not None:
                self._count(partition, -len(old))
            pieces[input_] = piece
            self._count(partition, nbytes)
        return nbytes

    @property
    def full(self) -> bool:
        return self.in_memory > self.budget

    def flush(self) -> None:
        """Append every partition's pieces in memory to its file (blocking: a thread's)."""
        if self.directory is None:
            return
        with self._lock:
            batch = [(p, self._pieces.pop(p), self._sizes.pop(p)) for p in list(self._pieces)
                     if p not in self._writing]
            self._writing.update(p for p, _, _ in batch)
        failed: list[tuple[Partition, dict[int, bytes], int]] = []
        try:
            for partition, pieces, nbytes in batch:
                try:
                    self._append(partition, pieces)
                except OSError as e:
                    failed.append((partition, pieces, nbytes))
                    if self.write_error is None:
                        logger.error("cannot write shuffle pieces to %s: %s; they stay in "
                                     "memory", self.directory, e)
                    self.write_error = str(e)
                    continue
                with self._lock:
                    self.in_memory -= nbytes
                    self.written_total += nbytes
            if not failed:
                self.write_error = None
        finally:
            with self._lock:
                for partition, pieces, nbytes in failed:  # back, under what arrived since
                    newer = self._pieces.get(partition, {})
                    for input_ in newer.keys() & pieces.keys():
                        nbytes -= len(pieces[input_])
                        self.in_memory -= len(pieces[input_])
                    pieces.update(newer)
                    self._pieces[partition] = pieces
                    self._sizes[partition] = self._sizes.get(partition, 0) + nbytes
                self._writing.difference_update(p for p, _, _ in batch)
                self._written.notify_all()

    def take(self, partition: Partition) -> list[bytes | memoryview]:
        """A partition's pieces in input order, from disk and memory; they are
        forgotten (blocking: call it on a thread)."""
        with self._lock:
            while partition in self._writing:
                self._written.wait()
            pieces = self._pieces.pop(partition, {})
            self.in_memory -= self._sizes.pop(partition, 0)
            written = self._files.pop(partition, 0)
            self.on_disk -= written
        out: dict[int, bytes | memoryview] = {}
        if written:
            out.update(self._read(self._path(partition)))  # later records override earlier
        out.update(pieces)  # what stayed in memory came last
        return [out[i] for i in sorted(out)]

    def _read(self, path: str) -> Iterator[tuple[int, memoryview]]:
        """Every (input, piece) of a partition's file, in the order written; the pieces
        are views of the file's contents, not copies."""
        with open(path, "rb") as f:
            blob = memoryview(f.read())
        os.remove(path)
        start = 0
        while start < len(blob):
            (length,) = _LENGTH.unpack_from(blob, start)
            start += _LENGTH.size
            header = msgpack.unpackb(blob[start:start + length])
            start += length
            for input_, size in header:
                yield input_, blob[start:start + size]
                start += size

    def drop(self, name: str, run: str) -> None:
        """Forget every piece of one run of a shuffle (blocking: removes its files)."""
        with self._lock:
            for partition in [p for p in self._pieces if p[:2] == (name, run)]:
                del self._pieces[partition]
                self.in_memory -= self._sizes.pop(partition, 0)
            for partition in [p for p in self._files if p[:2] == (name, run)]:
                self.on_disk -= self._files.pop(partition)
            directory = self._runs.pop((name, run), None)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def clear(self) -> None:
        """Forget every piece of every shuffle (blocking: removes their files)."""
        with self._lock:
            runs = {p[:2] for p in self._pieces} | set(self._runs)
        for name, run in runs:
            self.drop(name, run)

    def _count(self, partition: Partition, nbytes: int) -> None:
        self._sizes[partition] = self._sizes.get(partition, 0) + nbytes
        self.in_memory += nbytes

    def _append(self, partition: Partition, pieces: dict[int, bytes]) -> None:
        """One record: its header's length, the header (each piece's input and length),
        then the pieces as they are (no copy into one buffer)."""
        header = msgpack.packb([(i, len(piece)) for i, piece in pieces.items()])
        length = len(header) + sum(map(len, pieces.values()))
        path = self._path(partition)
        with open(path, "ab") as f:
            start = f.tell()
            try:
                f.writelines([_LENGTH.pack(len(header)), header, *pieces.values()])
                f.flush()
            except OSError:
                with contextlib.suppress(OSError):  # no half record left behind
                    f.truncate(start)
                raise
        with self._lock:
            self._files[partition] = self._files.get(partition, 0) + _LENGTH.size + length
            self.on_disk += _LENGTH.size + length

    def _path(self, partition: Partition) -> str:
        assert self.directory is not None
        name, run, number = partition
        with self._lock:
            directory = self._runs.get((name, run))
            if directory is None:
                directory = os.path.join(self.directory, str(next(self._numbers)))
                self._runs[(name, run)] = directory
        os.makedirs(directory, exist_ok=True)
        return os.path.join(directory, str(number))
