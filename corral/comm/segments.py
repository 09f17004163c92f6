"""Shared memory segments (memfds) for ``corral.comm.shm``: made, filled, lent, reused.

Fresh memory is what a large transfer pays most for on small VMs (every new page
faults, ~25 000 faults per 100 MB); so a sender keeps the segments its peers have
released (``SegmentCache``, ``comm.shared-memory.cache`` bytes at most, each dropped
after ``IDLE_SECONDS`` unused) and fills them again: already allocated, a transfer is
then one copy in (``pwrite``, never a mapping of the sender's) and none out.

A segment is allocated in full when made (``posix_fallocate``), or before it is lent if
it was made for sealing (``pwrite`` makes the pages it writes, a window is opened only
on pages all made): memory short shows as an error there, which sends that frame
through the socket, rather than as a ``SIGBUS`` when the copy touches a page the kernel
cannot provide.

A receiver maps what it is lent, private and copy-on-write, its pages at once
(``_populate``; every segment is sealed against shrinking, so reading them is safe):
its writes stay its own,
and the mapping keeps the pages alive as long as the object built on it, whatever the
sender does meanwhile. A sender reuses a segment only after the receiver said it
unmapped it; a segment whose release never comes (the channel closed first) is closed,
never reused.

A process may also *seal* a buffer (``seal``): copy it into a segment of its own once
and rebuild its object on a private mapping of it. Sending that buffer later lends the
segment as it is (``sealed_segment`` finds it), with no copy at all. Workers do this for
large NumPy arrays the first time they send them to a same-host peer, or as their tasks
make them (``corral.worker.shared_results``), so that peers get them for the cost of a
mapping.

A sealed segment is recycled too: taken from the cache when one fits, and given back to
it when nobody maps it any more, that is once its object is gone *and* every peer it was
lent to said it unmapped it (``lend_sealed``, ``sealed_returned``; a mapping sees what
is written into the segment later, wherever it did not write itself). A lend whose
release can never come (the channel closed first: ``stranded``) spoils the
segment for good: it is closed, never reused, once the last of its users is gone. Lend
counts are kept under a lock: objects die on any thread (tasks', the loop's, the
collector's).

How a segment is filled (a 2-core VM, 500 MB, no huge pages): ``pwrite`` into fresh
pages ~2 GB/s, into pages already made ~4 GB/s; mapping the segment for one copy
(``MAP_SHARED``, populated or not, then unmapped) 2-4 GB/s, the page tables costing
more than the copy saves; ``memmove`` into a mapping kept open ~12-14 GB/s. So a fresh
segment, and a lent one, is filled with ``pwrite``; a segment reused for sealing keeps a
*window* open on it (``Segment.copy_in``, ``corral.comm._windows``) while it is sealed
and cached, closed when it is taken for lending or its owner goes while a peer maps it
(its pages then are the peer's, and must not stay in this process's RSS).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from corral.comm import _windows
from corral.comm.framing import allocate_frame
from corral.comm.reuse import ReusePool
from corral.exceptions import ProtocolError

IDLE_SECONDS = 30.0  # a cached segment unused this long is freed
_CHUNK = 2**30  # os.preadv reads at most ~2 GiB at once
# madvise: map a file's pages readable in one call, without breaking copy-on-write
# (Linux 5.14; before it, pages fault in when first touched)
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)
# A read fault on a file's mapping maps the pages around it too, this many bytes
# (Linux's default ``fault_around_bytes``); and memfds that can be sealed (Linux 3.17)
_FAULT_AROUND = 64 * 1024
_ALLOW_SEALING = getattr(os, "MFD_ALLOW_SEALING", 0) if hasattr(fcntl, "F_SEAL_SHRINK") else 0

# Per process: what went through shared memory, and what fell back to the socket.
stats = {"sent_frames": 0, "sent_bytes": 0, "received_frames": 0, "received_bytes": 0,
         "fallback_frames": 0, "copied_frames": 0, "reused_segments": 0, "channels": 0,
         "sealed_buffers": 0, "sealed_frames_sent": 0, "recycled_segments": 0,
         "spoilt_segments": 0}


def capacity(nbytes: int) -> int:
    """The size of segment made for a frame of ``nbytes``: rounded up to an eighth of
    its power of two (so frames of similar sizes share segments, wasting < 12.5 %)."""
    step = max(mmap.PAGESIZE, (1 << (nbytes.bit_length() - 1)) // 8)
    return -(-nbytes // step) * step


class Segment:
    """A memfd of ``size`` bytes, allocated. The sender of a lent segment never maps it:
    frames are written in with ``pwrite``, so its pages count in the memory of the peer
    that maps them, not in this process's, not even during the copy (a worker's memory
    manager and its nanny watch its RSS: a paused worker serving its data must not cross
    its limit). A sealed segment is mapped by its owner, in place of the private memory
    its object had, and lent to peers as it is (``lends`` of them not yet released);
    reused for sealing, it keeps a *window* open (``corral.comm._windows``)."""

    __slots__ = ("allocated", "fd", "home", "lends", "sealed", "size", "spoilt",
                 "window", "written")

    def __init__(self, size: int, allocate: bool = True) -> None:
        self.fd = os.memfd_create("corral-frame", os.MFD_CLOEXEC | _ALLOW_SEALING)
        try:
            # A segment filled once and never mapped before that needs no allocating:
            # ``pwrite`` fails cleanly where memory is short.
            os.posix_fallocate(self.fd, 0, size) if allocate else os.ftruncate(self.fd, size)
            if _ALLOW_SEALING:  # never shorter: receivers may touch its pages (``_populate``)
                fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = size
        self.allocated = allocate  # every page made (else some may fail when written)
        self.home: SegmentCache | None = None  # where a sealed segment goes back to
        self.lends = 0  # sealed: sends to peers not yet released (under ``_seal_lock``)
        self.sealed = False  # sealed: its owner's mapping is alive
        self.spoilt = False  # sealed: a lend that will never be released; never reuse
        self.window = 0  # address of this process's shared mapping of it, if open
        self.written = False  # its pages were made (filled once, then cached)

    def fill(self, frame: Any) -> None:
        """Copy ``frame`` to the start of the segment (``pwrite`` lets go of the GIL)."""
        source = memoryview(frame).cast("B")
        done = 0
        while done < source.nbytes:
            done += os.pwrite(self.fd, source[done: done + _CHUNK], done)

    def copy_in(self, data: memoryview) -> None:
        """Copy ``data`` to the start of the segment through its window, opened if need
        be, if its pages were made already (else mapping them costs more than ``fill``)."""
        if not self.window and self.written:
            self.window = _windows.open_window(self.fd, self.size)
            self.allocated |= bool(self.window)  # (all its pages were mapped)
        if not (self.window and _windows.copy_into(self.window, data)):
            self.fill(data)

    def close_window(self) -> None:
        window, self.window = self.window, 0
        _windows.close_window(window, self.size)

    def close(self) -> None:
        self.close_window()
        os.close(self.fd)


class SegmentCache:
    """Released segments kept for reuse, up to ``limit`` bytes (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self._pool: ReusePool[Segment] = ReusePool(limit, lambda s: s.size, Segment.close)

    @property
    def limit(self) -> int:
        return self._pool.limit

    @property
    def nbytes(self) -> int:
        return self._pool.nbytes

    @property
    def mapped(self) -> int:
        """Bytes of the cached segments with a window open (in this process's RSS)."""
        return sum(s.size for s in self._pool.things() if s.window)

    def take(self, nbytes: int, allocate: bool = True, window: bool = False) -> Segment:
        """A cached segment that fits ``nbytes`` snugly, else a new one (``OSError``);
        its window closed unless it is for sealing (``window``): a lent segment's pages
        must not stay in this process's RSS while a peer maps them."""
        segment = self._pool.take(nbytes)
        if segment is None:
            return Segment(capacity(nbytes), allocate)
        stats["reused_segments"] += 1
        if not window:
            segment.close_window()
        if allocate and not segment.allocated:  # a sealed one's, filled with fewer bytes
            try:
                os.posix_fallocate(segment.fd, 0, segment.size)
            except OSError:
                segment.close()
                raise
            segment.allocated = True
        return segment

    def put(self, segment: Segment, now: float | None = None) -> None:
        """Keep ``segment`` for reuse, freeing the oldest ones past the limit."""
        segment.written = True
        self._pool.put(segment, time.monotonic() if now is None else now)

    def trim(self, now: float | None = None) -> None:
        """Free the segments unused for ``IDLE_SECONDS``."""
        self._pool.trim(time.monotonic() if now is None else now, IDLE_SECONDS)

    def clear(self) -> None:
        self._pool.clear()


# -- the receiving side ----------------------------------------------------------------


def _mapping_budget() -> int:
    """How many frames may stay mapped at once: CPython 3.11's ``mmap`` keeps a
    descriptor open per mapping, and those must not crowd out sockets."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        soft = 1024
    return max(16, soft // 4) if soft != -1 else 2**16


_BUDGET = _mapping_budget()
_mapped = 0  # frames mapped and alive in this process (mappings are made and unmade on
_mapped_lock = threading.Lock()  # the loop's thread, tasks' threads and the collector's)
# Bytes, in whole pages, of the segments behind those mappings: lent to this process
# (mapped populated) and sealed by it (mapped as read); and of the windows of sealed
# segments (their pages mapped twice here, a window's all in the RSS); see ``held``.
_held = {"lent": 0, "sealed": 0, "windows": 0}


def _count_mapping(change: int, kind: str, nbytes: int) -> None:
    global _mapped
    pages = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    with _mapped_lock:
        _mapped += change
        _held[kind] += change * pages


def _count_window(nbytes: int) -> None:
    with _mapped_lock:
        _held["windows"] += nbytes


def held() -> tuple[int, int, int]:
    """Bytes (whole pages) of the segments this process sealed and still holds, of the
    frames lent to it that it still maps, and of the windows open on sealed segments. A
    sealed segment's pages count in this process's RSS only once read through its
    mapping (or all at once, through its window), yet live as long as it does: a
    worker's memory watch adds those not counted (``corral.worker.process_memory``)."""
    return _held["sealed"], _held["lent"], _held["windows"]


def _unmapped(nbytes: int, release: Callable[[], None]) -> None:
    _count_mapping(-1, "lent", nbytes)
    release()


def _map_private(fd: int, nbytes: int, populate: bool = True) -> mmap.mmap:
    """The first ``nbytes`` of memfd ``fd``, mapped private and writable, its pages
    mapped for reading at once if ``populate``: writes copy the page they touch and never
    reach the segment."""
    buffer = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE,
                       prot=mmap.PROT_READ | mmap.PROT_WRITE)
    if populate:
        _populate(fd, buffer)
    return buffer


def _cannot_shrink(fd: int) -> bool:
    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK)
    except (OSError, AttributeError):
        return False


def _populate(fd: int, buffer: mmap.mmap) -> None:
    """Map ``buffer``'s pages now. Reading one byte per ``_FAULT_AROUND`` maps each
    window's pages in one fault (500 MB: 33 ms; a page the kernel is busy with may be
    left to fault in when read), where ``MADV_POPULATE_READ`` maps them one by one
    (45 ms); but a read past the end of a segment cut short by its sender would
    kill this process (``SIGBUS``), so only segments sealed against shrinking are read."""
    if _cannot_shrink(fd):
        # The windows are aligned in this process's addresses: read the first byte, then
        # one at the start of each window after it.
        first = -_address(buffer) % _FAULT_AROUND
        with memoryview(buffer) as view, view[first::_FAULT_AROUND] as every_window:
            view[0], every_window.tobytes()
        return
    with contextlib.suppress(OSError):  # an older kernel: pages fault in when touched
        buffer.madvise(_MADV_POPULATE_READ)


def map_frame(fd: int, nbytes: int, release: Callable[[], None]) -> Any:
    """The frame in memfd ``fd`` (the first ``nbytes``), mapped private and writable —
    or, past ``_BUDGET`` live mappings, copied out. ``release`` is called once the
    segment is no longer used here (the mapping gone, or the copy made)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size < nbytes:
        raise ProtocolError(f"shared frame of {nbytes} bytes in a segment of {info.st_size}")
    if _mapped >= _BUDGET:
        target = allocate_frame(nbytes)
        view = memoryview(target)
        done = 0
        while done < nbytes:
            read = os.preadv(fd, [view[done : done + _CHUNK]], done)
            if read <= 0:
                raise ProtocolError("shared frame shorter than announced")
            done += read
        stats["copied_frames"] += 1
        release()
        return target
    buffer = _map_private(fd, nbytes)
    _count_mapping(1, "lent", nbytes)
    weakref.finalize(buffer, _unmapped, nbytes, release)
    return memoryview(buffer)


# -- buffers sealed by their owner ---------------------------------------------------

# id of a sealed mapping -> (its address, its size, its segment); an entry goes when its
# mapping does (before the id can be reused), and its segment is retired once no peer
# maps it either (``_retire``).
_sealed: dict[int, tuple[int, int, Segment]] = {}


def _address(buffer: Any) -> int:
    """Where a writable buffer starts in memory (``TypeError`` if it is read-only)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


_seal_lock = threading.Lock()  # lend counts and owners of sealed segments


def _unsealed(key: int, nbytes: int) -> None:
    _count_mapping(-1, "sealed", nbytes)
    entry = _sealed.pop(key, None)
    if entry is not None:
        segment = entry[2]
        window = 0
        with _seal_lock:
            if segment.window:
                _count_window(-segment.size)
                if segment.lends:  # the pages are the peers' now, not in this RSS
                    window, segment.window = segment.window, 0
            segment.sealed = False
            done = not segment.lends
        _windows.close_window(window, segment.size)
        if done:
            _retire(segment)


def lend_sealed(segment: Segment) -> None:
    """A send of sealed ``segment`` to a peer starts: it is not reused before that peer
    releases it or is gone (``sealed_returned``)."""
    with _seal_lock:
        segment.lends += 1


def sealed_returned(segment: Segment, stranded: bool = False) -> None:
    """A peer unmapped sealed ``segment`` (or it was never sent); ``stranded``: that
    peer may map it still, and will never say when it stops (its channel closed)."""
    with _seal_lock:
        segment.lends -= 1
        segment.spoilt |= stranded
        done = not segment.lends and not segment.sealed
    if done:
        _retire(segment)


def _retire(segment: Segment) -> None:
    """Nobody maps sealed ``segment`` any more, here or in a peer that told: back to the
    cache it came from, unless a peer may still map it (then only closed)."""
    if segment.spoilt or segment.home is None:
        stats["spoilt_segments"] += segment.spoilt
        segment.close()
        return
    stats["recycled_segments"] += 1
    home, segment.home = segment.home, None
    home.put(segment)


def seal(data: memoryview, cache: SegmentCache | None = None) -> memoryview | None:
    """A copy of ``data`` in a segment (from ``cache`` if one fits, going back to it when
    nobody maps it any more), mapped private and writable; None if memory or mappings are
    short (the caller keeps ``data``). Sending the returned buffer, or an object built on
    it, lends the segment instead of copying it (``sealed_segment``)."""
    nbytes = data.nbytes
    if _mapped >= _BUDGET:
        return None
    try:
        # Not allocated beyond what is written: every mapping of a segment covers only
        # bytes written in it, and a window is opened on one only once its pages are made.
        segment = (cache.take(nbytes, allocate=False, window=True) if cache is not None
                   else Segment(nbytes, allocate=False))
    except OSError:
        return None
    try:
        segment.copy_in(data)
        # Not populated: the pages are in memory already, and mapping them as they are
        # read costs no more than mapping them all now. (So they join this process's RSS
        # only as they are read: ``held`` lets a worker count the rest.)
        mapping = _map_private(segment.fd, nbytes, populate=False)
    except BaseException as e:
        segment.close()
        if isinstance(e, OSError):  # memory short
            return None
        raise
    segment.home, segment.sealed, segment.lends, segment.spoilt = cache, True, 0, False
    key = id(mapping)
    _sealed[key] = (_address(mapping), nbytes, segment)
    _count_mapping(1, "sealed", nbytes)
    if segment.window:
        _count_window(segment.size)
    weakref.finalize(mapping, _unsealed, key, nbytes)
    stats["sealed_buffers"] += 1
    return memoryview(mapping)


def sealed_segment(frame: Any) -> Segment | None:
    """The segment ``frame`` is, byte for byte, if it is the whole of a buffer this
    process sealed: found through the objects its memory belongs to (a NumPy array's
    ``base``, a memoryview's ``obj``), which keep that mapping alive meanwhile."""
    if not _sealed or isinstance(frame, bytes | bytearray):
        return None
    view = memoryview(frame)
    owner: Any = view.obj
    for _ in range(8):
        if isinstance(owner, mmap.mmap):
            entry = _sealed.get(id(owner))
            break
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
        if owner is None:
            return None
    else:
        return None
    if entry is None or view.nbytes != entry[1] or view.readonly:
        return None
    try:
        if _address(view) != entry[0]:
            return None
    except (TypeError, ValueError):  # not a contiguous writable buffer
        return None
    return entry[2]
