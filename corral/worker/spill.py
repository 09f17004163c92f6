"""The worker's data store, which spills to disk (see ``corral.worker.memory``).

``SpillBuffer`` is a ``zict.AsyncBuffer``: an LRU of values in memory over files on
disk (``zict.File``, one per value: a header, then the pickled value's frames, each
lz4-compressed where that pays). Spilling and reading back run on the buffer's thread
(or a task's), never on the event loop. Values that cannot be pickled stay in memory
(logged once); a write that fails (disk full) leaves the value in memory, is logged
once and reported (``spill_error``) until a write works again.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pickle
import struct
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import msgpack
import zict

from corral.basic_types import Key
from corral.protocol.compression import decompress, maybe_compress
from corral.protocol.serialize import dumps_pickle, loads_pickle
from corral.sizeof import sizeof

logger = logging.getLogger("corral.worker.spill")


class SpillError(Exception):
    """A value could not be written to disk; ``disk`` tells a failing disk from a value
    that cannot be pickled."""

    def __init__(self, key: Key, cause: BaseException, disk: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.key, self.disk = key, disk


_HEADER = struct.Struct("<I")


def dump_frames(value: Any) -> list[bytes | bytearray | memoryview]:
    """A value as the pieces of one file: a header (codecs, lengths), then its frames,
    each lz4-compressed where that pays."""
    buffers: list[pickle.PickleBuffer] = []
    frames: list[Any] = [dumps_pickle(value, buffer_callback=buffers.append)]
    frames += [b.raw() for b in buffers]
    codecs: list[tuple[str | None, int]] = []
    out: list[bytes | bytearray | memoryview] = []
    for frame in frames:
        codec, data = maybe_compress("lz4", frame)
        codecs.append((codec, memoryview(data).nbytes))  # type: ignore[arg-type]
        out.append(data)  # type: ignore[arg-type]
    header = msgpack.packb(codecs)
    return [_HEADER.pack(len(header)), header, *out]


def load_frames(blob: bytearray | memoryview) -> Any:
    view = memoryview(blob)
    (size,) = _HEADER.unpack_from(view)
    start = _HEADER.size + size
    frames = []
    for codec, length in msgpack.unpackb(view[_HEADER.size:start]):
        frame = view[start:start + length]
        frames.append(decompress(codec, frame) if codec else frame)
        start += length
    return loads_pickle(frames[0], buffers=frames[1:])


class _Disk(MutableMapping[Key, Any]):
    """Values pickled into files of a ``zict.File`` (which wants string keys)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files = zict.File(directory)
        self.names: dict[Key, str] = {}
        self.weights: dict[Key, int] = {}  # key → sizeof(value), what it took in memory
        self.disk_bytes: dict[Key, int] = {}
        self._n = 0

    def __setitem__(self, key: Key, value: Any) -> None:
        try:
            frames = dump_frames(value)
        except Exception as e:
            raise SpillError(key, e, disk=False) from e
        self._n += 1
        name = f"k{self._n}"
        try:
            self.files[name] = frames
        except OSError as e:  # disk full, directory gone: leave no partial file behind
            for path in glob.glob(os.path.join(glob.escape(self.directory), f"{name}#*")):
                with contextlib.suppress(OSError):
                    os.remove(path)
            raise SpillError(key, e, disk=True) from e
        self.names[key] = name
        self.weights[key] = sizeof(value)
        self.disk_bytes[key] = sum(memoryview(f).nbytes for f in frames)

    def __getitem__(self, key: Key) -> Any:
        return load_frames(self.files[self.names[key]])

    def __delitem__(self, key: Key) -> None:
        name = self.names.pop(key)
        del self.weights[key], self.disk_bytes[key]
        del self.files[name]

    def __contains__(self, key: object) -> bool:
        return key in self.names

    def __iter__(self) -> Iterator[Key]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


class SpillBuffer(zict.AsyncBuffer[Key, Any]):
    """The worker's data: values in memory up to ``target`` bytes, the rest on disk.

    Adding a value never writes on the calling thread: spilling runs on the buffer's
    own thread (``async_evict_until_below_target``); ``async_get`` reads spilled values
    back on it too. Plain ``buffer[key]`` may read from disk: call it on a task's thread.
    """

    RETRY_AFTER_DISK_ERROR = 2.0  # seconds before trying to write to a failing disk again

    def __init__(self, directory: str, target: float) -> None:
        # The LRU itself never evicts (n = ∞): this class does, skipping what cannot
        # be pickled, so that a failed eviction never fails a read or a write.
        # (zict's wraps() of Buffer.__init__ hides the signature from mypy.)
        self._known: dict[Key, int] = {}  # sizes measured already (``put``)
        super().__init__({}, _Disk(directory), float("inf"), weight=self._weigh)  # type: ignore[arg-type]
        self.target = target
        self.unspillable: set[Key] = set()
        self.spill_error: str | None = None  # the last failed write to disk, until one works
        self._disk_failed_at = float("-inf")
        self.spilled_total = 0  # bytes (in memory) ever written to disk
        self._reading = threading.Lock()

    @property
    def disk(self) -> _Disk:
        return self.slow  # type: ignore[return-value]

    @property
    def managed(self) -> int:
        """Bytes of the values held in memory."""
        return int(self.fast.total_weight)

    @property
    def spilled(self) -> int:
        """Bytes (as they were in memory) of the values on disk."""
        return sum(self.disk.weights.values())

    def __getitem__(self, key: Key) -> Any:
        try:
            return self.fast[key]
        except KeyError:
            pass
        # zict 3.0 cannot read one spilled key back on two threads at once (a task's
        # and a peer's fetch): the second fails with a KeyError. Reads from disk queue.
        with self._reading:
            value = super().__getitem__(key)
        # Read back into memory (on this thread, never the event loop's): make room.
        if self.fast.total_weight > self.target:
            self.evict_until_below_target(self.target)
        return value

    def __setitem__(self, key: Key, value: Any) -> None:
        self.unspillable.discard(key)
        self.set_noevict(key, value)
        if self.fast.total_weight > self.target:  # (the call takes the lock: skip it)
            # Down to target less this value's size: room for the next result, which
            # its task is computing while this spill runs.
            room = self.fast.weights.get(key, 0)
            self.async_evict_until_below_target(max(self.target - room, 0))

    def put(self, key: Key, value: Any, nbytes: int) -> None:
        """``self[key] = value``, its size (``sizeof``) measured already."""
        self._known[key] = nbytes
        self[key] = value

    def swap(self, key: Key, old: Any, new: Any) -> bool:
        """Hold ``new`` in memory in place of ``old`` under ``key``, at ``old``'s size, if
        ``old`` is held there still; False if it was released, spilled or replaced."""
        with self.lock:
            if self.fast.d.get(key) is not old:
                return False
            self._known[key] = int(self.fast.weights[key])
            self.fast.set_noevict(key, new)
            return True

    def _weigh(self, key: Key, value: Any) -> int:
        nbytes = self._known.pop(key, None)
        return sizeof(value) if nbytes is None else nbytes

    def __delitem__(self, key: Key) -> None:
        super().__delitem__(key)
        self.unspillable.discard(key)

    def clear(self) -> None:
        """Drop everything, reading nothing back (``MutableMapping.clear`` would)."""
        for key in list(self.keys()):
            with contextlib.suppress(KeyError):
                del self[key]

    def evict_until_below_target(self, n: float | None = None) -> None:
        """Spill least recently used values until at most ``n`` bytes are in memory
        (on the buffer's thread)."""
        n = self.target if n is None else n
        if time.monotonic() - self._disk_failed_at < self.RETRY_AFTER_DISK_ERROR:
            return
        while self.fast.total_weight > n and not self.fast.closed:
            key = self._victim()
            if key is None:
                return  # all that is left cannot be pickled
            try:
                _, _, weight = self.fast.evict(key)
            except KeyError:
                continue  # deleted or read back meanwhile
            except SpillError as e:
                if not e.disk:
                    self.unspillable.add(key)
                    logger.warning("cannot spill %r to disk, it stays in memory: %s", key, e)
                    continue
                if self.spill_error is None:
                    logger.error("cannot spill to %s: %s; data stays in memory, and the "
                                 "worker pauses if memory keeps growing", self.disk.directory, e)
                self.spill_error = str(e)
                self._disk_failed_at = time.monotonic()
                return
            self.spill_error = None
            self.spilled_total += int(weight)

    def _victim(self) -> Key | None:
        with self.fast.lock:
            for key in self.fast.order:
                if key not in self.unspillable:
                    return key
        return None
