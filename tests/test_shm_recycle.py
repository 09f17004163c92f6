"""Sealed segments recycled (corral.comm.segments, corral.comm.shm): back to the cache once
nobody maps them, never while a peer may, never after a channel closed on a lend; and a
worker's cache of segments, counted and given back before it spills or pauses."""

from __future__ import annotations

import gc
import os
import socket
import weakref

import numpy as np
import pytest

import corral
from corral import Client, LocalCluster
from corral.comm import frame_memory, segments, shm
from corral.comm.framing import SHARED_FLAG
from corral.worker import shared_results
from corral.worker.thresholds import Thresholds
from tests._helpers import filled, memory_watch, total, wait_until, wait_until_blocking

pytestmark = [pytest.mark.skipif(not shm.available(), reason="shared memory needs Linux memfds"),
              pytest.mark.timeout(60)]

LARGE = 2 * 2**20  # over the default 1 MiB threshold


@pytest.fixture(autouse=True)
def own_cache(monkeypatch):
    """A cache of this test's own, results placed from the sharing threshold, and the
    channels of other tests out of the way (the last channel to close clears the cache)."""
    monkeypatch.setattr(shm, "_cache", None)
    monkeypatch.setattr(shm, "_open_channels", weakref.WeakSet())
    with corral.config.set({"comm.shared-memory.place-results": True}):
        yield
    shm.trim_cache(clear=True)


def placed(fill: int) -> np.ndarray:
    array = shared_results.place(np.full(LARGE, fill, dtype="u1"), LARGE)
    assert segments.sealed_segment(array) is not None
    return array


def grown(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in segments.stats.items() if v != before.get(k, 0)}


@pytest.fixture
async def pair():
    one, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sender, receiver = shm.SharedChannel(one), shm.SharedChannel(other)
    yield sender, receiver
    sender.close()
    receiver.close()


async def lend(sender: shm.SharedChannel, receiver: shm.SharedChannel, array: np.ndarray):
    frames, lengths = await sender.place([array], [LARGE])
    assert frames == []  # it went through shared memory
    assert lengths == [LARGE | SHARED_FLAG]
    return await receiver.take(LARGE)


def test_a_sealed_segment_whose_object_died_is_reused_for_the_next_seal():
    before = dict(segments.stats)
    first = placed(1)
    segment = segments.sealed_segment(first)
    del first
    gc.collect()
    assert shm.cache().nbytes == segment.size  # back in the cache, not closed
    second = placed(2)
    assert segments.sealed_segment(second) is segment
    assert (second == 2).all()
    assert grown(before) == {"sealed_buffers": 2, "recycled_segments": 1,
                             "reused_segments": 1}


async def test_a_sealed_segment_is_not_reused_while_a_peer_maps_it(pair):
    sender, receiver = pair
    original = placed(7)
    segment = segments.sealed_segment(original)
    frame = await lend(sender, receiver, original)
    assert segment.lends == 1
    del original
    gc.collect()
    assert shm.cache().nbytes == 0  # the peer maps it still
    other = placed(9)  # the same size: it would take that segment if it were free
    assert segments.sealed_segment(other) is not segment
    assert bytes(frame[:4]) == b"\x07" * 4
    assert bytes(frame[-4:]) == b"\x07" * 4
    before = dict(segments.stats)
    del frame
    gc.collect()  # the peer unmaps it and says so: now it is free
    await wait_until(lambda: shm.cache().nbytes == segment.size)
    assert grown(before) == {"recycled_segments": 1}
    again = placed(3)
    assert segments.sealed_segment(again) is segment


async def test_a_peer_that_released_first_leaves_the_segment_to_its_owner(pair):
    sender, receiver = pair
    owned = placed(5)
    segment = segments.sealed_segment(owned)
    frame = await lend(sender, receiver, owned)
    del frame
    gc.collect()
    await wait_until(lambda: segment.lends == 0)
    assert shm.cache().nbytes == 0  # its owner's object holds it
    assert (owned == 5).all()
    del owned
    gc.collect()
    assert shm.cache().nbytes == segment.size


async def test_a_segment_lent_on_a_channel_that_closed_is_never_reused(pair):
    sender, receiver = pair
    original = placed(4)
    segment = segments.sealed_segment(original)
    kept = await lend(sender, receiver, original)  # and lent twice, once released
    released = await lend(sender, receiver, original)
    del released
    gc.collect()
    await wait_until(lambda: segment.lends == 1)
    before = dict(segments.stats)
    sender.close()  # with a lend outstanding: the peer may map it for good
    del original
    gc.collect()
    assert grown(before) == {"spoilt_segments": 1}
    assert shm.cache().nbytes == 0
    again = placed(8)
    assert segments.sealed_segment(again) is not segment
    assert bytes(kept[:4]) == b"\x04" * 4  # the peer's copy is as it was sent


async def test_a_send_that_fails_does_not_count_as_a_lend(pair, monkeypatch):
    sender, _ = pair
    array = placed(6)
    segment = segments.sealed_segment(array)

    def behind(*args):
        raise BlockingIOError

    monkeypatch.setattr(shm.socket, "send_fds", behind)
    frames, lengths = await sender.place([array], [LARGE])
    assert len(frames) == 1  # the socket then
    assert lengths == [LARGE]
    assert segment.lends == 0
    del array, frames
    gc.collect()
    assert shm.cache().nbytes == segment.size


def test_a_reused_segment_is_copied_into_through_a_window_kept_while_cached():
    first = placed(1)
    segment = segments.sealed_segment(first)
    assert not segment.window  # fresh pages: pwrite
    del first
    gc.collect()
    second = placed(2)
    assert segments.sealed_segment(second) is segment
    assert segment.window  # made pages: mapped once, kept
    assert (second == 2).all()
    assert segments.held()[2] == segment.size
    del second
    gc.collect()
    assert segments.held()[2] == 0
    assert shm.cache().mapped == segment.size  # cached with its window
    third = placed(3)
    assert (third == 3).all()
    del third
    gc.collect()
    lent = shm.cache().take(LARGE)  # for lending: its pages must leave this RSS
    assert lent is segment
    assert not lent.window
    shm.cache().put(lent)


async def test_an_owner_gone_while_a_peer_maps_its_segment_closes_the_window(pair):
    sender, receiver = pair
    first = placed(1)
    del first
    gc.collect()
    original = placed(7)
    segment = segments.sealed_segment(original)
    assert segment.window
    frame = await lend(sender, receiver, original)
    del original
    gc.collect()
    assert not segment.window
    assert segments.held()[2] == 0
    again = placed(9)
    assert segments.sealed_segment(again) is not segment
    assert bytes(frame[-4:]) == b"\x07" * 4
    del frame
    gc.collect()
    await wait_until(lambda: shm.cache().nbytes == segment.size)


# -- a worker's memory -----------------------------------------------------------------


MEASURED = 32 * 2**20


def test_a_windowed_placed_result_and_a_windowed_cached_segment_count_once():
    import psutil

    from corral.worker import process_memory

    process = psutil.Process()
    gc.collect()
    frame_memory.trim_cache(clear=True)  # nothing cached that could go mid-test
    base = process_memory.measure(process)
    first = shared_results.place(np.ones(MEASURED, dtype="u1"), MEASURED)
    del first
    gc.collect()  # cached, no window: counted
    assert base + 0.9 * MEASURED < process_memory.measure(process) < base + 1.3 * MEASURED
    second = shared_results.place(np.ones(MEASURED, dtype="u1"), MEASURED)
    assert segments.sealed_segment(second).window
    assert base + 0.9 * MEASURED < process_memory.measure(process) < base + 1.3 * MEASURED
    assert second.sum() == MEASURED  # read: its pages mapped twice here, counted once
    assert base + 0.9 * MEASURED < process_memory.measure(process) < base + 1.3 * MEASURED
    del second
    gc.collect()  # cached with its window open: in the RSS, counted once
    assert shm.cache().mapped > 0
    assert base + 0.9 * MEASURED < process_memory.measure(process) < base + 1.3 * MEASURED
    shm.trim_cache(clear=True)
    assert process_memory.measure(process) < base + 0.3 * MEASURED




@pytest.mark.parametrize("thresholds", [Thresholds(), Thresholds(spill=None)],
                         ids=["spill", "pause"])
def test_the_cache_counts_in_memory_and_goes_before_a_spill_or_pause(thresholds):
    cached = segments.Segment(segments.capacity(16 * LARGE))
    shm.cache().put(cached)
    plenty = memory_watch(2**40, thresholds)
    measured = plenty.measure()
    assert shm.cache().nbytes == cached.size  # under every threshold: kept
    assert measured >= plenty.process.memory_info().rss + cached.size - 2**20
    # A limit whose spill (or pause) threshold this process is over by itself.
    memory_watch(int(measured * 1.1), thresholds).measure()
    assert shm.cache().nbytes == 0


def test_idle_cached_segments_are_freed_when_memory_is_looked_at():
    shm.cache().put(segments.Segment(segments.capacity(LARGE)), now=0.0)  # long unused
    shm.cache().put(segments.Segment(segments.capacity(LARGE)))
    memory_watch(2**40).measure()
    assert shm.cache().nbytes == segments.capacity(LARGE)


# -- between worker processes ------------------------------------------------------------


def counts():
    return {"mapped": segments._mapped, **segments.stats}


def test_a_worker_reuses_the_segment_of_a_result_moved_and_released():
    with corral.config.set({"comm.shared-memory.place-results": LARGE}), \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        maker, reader = sorted(client.nthreads())
        before = client.run(counts)[maker]
        for fill in (1, 2, 3, 4):
            made = client.submit(filled, LARGE, fill, workers=[maker], pure=False)
            assert client.submit(total, made, workers=[reader]).result() == fill * LARGE
            del made
            # The reader unmaps its copy (and tells the maker); the maker's comm lets go
            # of what it sent when it next sends, so a segment is free a round later.
            wait_until_blocking(lambda: client.run(counts)[reader]["mapped"] == 0)
        after = client.run(counts)[maker]
        assert after["sealed_buffers"] - before["sealed_buffers"] == 4
        assert after["sealed_frames_sent"] - before["sealed_frames_sent"] == 4
        assert after["recycled_segments"] - before["recycled_segments"] >= 2
        assert after["reused_segments"] - before["reused_segments"] >= 1


def test_a_recycled_sealed_segment_is_allocated_in_full_before_it_is_lent(monkeypatch):
    """Sealed into without allocating (``pwrite`` makes the pages it writes), a segment
    lent later is allocated first: memory short must show there, not mid-copy."""
    first = shared_results.place(np.ones(LARGE + 4096, dtype="u1"), LARGE + 4096)
    segment = segments.sealed_segment(first)
    assert segment.size > LARGE + 4096  # rounded up: a tail never written
    del first
    gc.collect()
    assert not segment.allocated
    calls = []
    monkeypatch.setattr(segments.os, "posix_fallocate",
                        lambda *args: calls.append(args))
    lent = shm.cache().take(LARGE + 4096)
    assert lent is segment
    assert calls == [(segment.fd, 0, segment.size)]
    assert segment.allocated
    shm.cache().put(lent)


def _resident(buffer) -> int:
    """Bytes of ``buffer``'s mapping that are mapped in this process (its ``Rss``)."""
    import ctypes

    start = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    with open("/proc/self/smaps") as smaps:
        lines = smaps.read().splitlines()
    for at, line in enumerate(lines):
        if line.split("-")[0] == f"{start:x}":
            rss = next(x for x in lines[at + 1:] if x.startswith("Rss:"))
            return int(rss.split()[1]) * 1024
    raise AssertionError("mapping not found")


@pytest.mark.parametrize("sealed", [True, False], ids=["cannot-shrink", "may-shrink"])
def test_a_lent_frame_is_mapped_in_full_whether_or_not_its_segment_may_shrink(sealed):
    nbytes = 64 * 2**16
    if sealed:
        segment = segments.Segment(nbytes)
        fd = segment.fd
        with pytest.raises(PermissionError):  # receivers may read it: it never shrinks
            os.ftruncate(fd, 0)
    else:
        fd = os.memfd_create("test-frame")
        os.ftruncate(fd, nbytes)
    os.pwrite(fd, b"x" * nbytes, 0)
    assert segments._cannot_shrink(fd) == sealed
    buffer = segments._map_private(fd, nbytes)
    if sealed:  # read a window at a time: the kernel may leave out a page it is busy with
        assert _resident(buffer) >= 0.95 * nbytes
    else:
        assert _resident(buffer) == nbytes
    buffer.close()
    os.close(fd)
