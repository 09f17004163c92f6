"""Windows onto segments: a segment's own shared, writable mapping, kept while it is reused.

Copying into a segment with ``pwrite`` costs the kernel's copy plus a page lookup per
page, ~4 GB/s on a 2-core VM; into pages already mapped, a plain ``memmove`` runs at
~12 GB/s. Mapping them for one copy does not pay (setting up and tearing down the page
tables costs more than the copy saves: 2-4 GB/s). So a segment reused for sealed
buffers keeps a window open between uses (``corral.comm.segments.Segment.copy_in``).

Made with libc's ``mmap`` through ctypes, not Python's ``mmap`` module: no descriptor
is duplicated for it (CPython 3.11 keeps one per ``mmap`` object), and ``memmove``
through ctypes lets go of the GIL during the copy. A window's pages are this process's
RSS (``RssShmem``) as long as it is open: ``corral.worker.process_memory`` counts them
once.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any

_MADV_POPULATE_READ = 22  # Linux 5.14; a shared writable mapping gets writable entries

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _mmap = _libc.mmap
    _mmap.restype = ctypes.c_void_p
    _mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
    _munmap = _libc.munmap
    _munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _madvise = _libc.madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
except (OSError, AttributeError):  # no libc to call: segments are filled with pwrite
    _libc = None

_FAILED = ctypes.c_void_p(-1).value


def open_window(fd: int, size: int) -> int:
    """The address of a shared, writable mapping of memfd ``fd``'s first ``size`` bytes,
    its pages mapped at once; 0 if it cannot be made."""
    if _libc is None:
        return 0
    address = _mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    if not address or address == _FAILED:
        return 0
    if _madvise(address, size, _MADV_POPULATE_READ):  # memory short, or an older kernel:
        _munmap(address, size)  # a page the copy touched could fail as a SIGBUS
        return 0
    return int(address)


def close_window(address: int, size: int) -> None:
    if address and _libc is not None:
        _munmap(address, size)


def copy_into(address: int, data: Any) -> bool:
    """Copy buffer ``data`` to ``address``; False if ``data``'s memory cannot be reached
    this way (read-only, not contiguous): the caller copies otherwise."""
    try:
        source = ctypes.addressof(ctypes.c_char.from_buffer(data))
    except (TypeError, ValueError):
        return False
    ctypes.memmove(address, source, memoryview(data).nbytes)
    return True
