"""How much memory a worker process holds: what its memory watch compares with the limit.

Its RSS, plus the pages of the segments it sealed (large results placed in shared memory,
``corral.worker.shared_results``) that are not in that RSS. A sealed segment's pages
join the RSS only as the worker reads them through its private mapping; until then they
are held by the segment alone, as long as the result lives, and no process's RSS shows
them. Without them a worker holding placed results would never spill or pause.

Which of the process's shared pages are a sealed segment's is read off two counters of
the kernel (``/proc/self/status``; no page walk, as cheap as ``statm``): ``RssShmem``
counts the pages of memfds mapped here, which are those of the frames lent to this
process (mapped in full as they arrive: ``segments.held``) and those of its sealed
segments it has read. A sealed page written to (copy-on-write) leaves ``RssShmem`` for
the process's anonymous memory, while the segment keeps its own: it is counted twice,
as it is twice in memory.

A sealed segment reused keeps a window open on it (``corral.comm._windows``): all its
pages are in ``RssShmem`` then, once more for those also read through the private
mapping. ``segments.held`` counts those windows, and they are taken for read pages too.

Segments kept for reuse (``corral.comm.shm.cache``: released by peers, or sealed ones
whose results are gone) count at their full size: in the RSS already if a window is
open on them, else mapped nowhere. They are also the cheapest memory to give back: a
worker about to spill or pause frees them first (``corral.worker.memory_watch``).
"""

from __future__ import annotations

import psutil

from corral.comm import segments, shm

_STATUS = "/proc/self/status"


def measure(process: psutil.Process) -> int:
    """Bytes of memory ``process`` (this one) holds: its RSS, its unread sealed pages and
    the segments it keeps for reuse."""
    sealed, lent, windows = segments.held()
    cached, mapped = shm.cached_bytes()
    if not sealed:  # nothing placed (or not Linux): the RSS says it all, and the cache
        return int(process.memory_info().rss) + cached - mapped
    rss, shmem = _rss_and_shmem()
    # Sealed pages in the RSS already: read through their mapping, or in a window.
    read = min(max(shmem - lent - mapped, 0), sealed + windows)
    return rss + sealed - read + cached - mapped


def _rss_and_shmem() -> tuple[int, int]:
    """``VmRSS`` and ``RssShmem`` of this process, in bytes."""
    found = {}
    with open(_STATUS, "rb") as f:
        for line in f:
            if line.startswith((b"VmRSS:", b"RssShmem:")):
                name, value, _ = line.split()
                found[name] = int(value) * 1024
    return found[b"VmRSS:"], found[b"RssShmem:"]
