"""Memory for large incoming frames (``corral.comm.frame_memory``): aligned on huge
pages, given back to a cache once what was made of a frame is gone, and read into again;
bounded, trimmed when idle, emptied under memory pressure."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import threading

import numpy as np
import psutil
import pytest

import corral
from corral import Client, LocalCluster
from corral import comm as transport
from corral.comm import FrameLimits, frame_memory
from corral.comm.frame_memory import HUGE_PAGE, FrameCache
from corral.comm.framing import HUGE_PAGE_THRESHOLD, allocate_frame
from corral.worker.thresholds import Thresholds
from tests._helpers import filled, memory_watch, total, wait_until_blocking

MB = 10**6


def address(frame) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(frame))


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    """The process's cache empty, and keeping nothing (no worker here) until told to."""
    frames = frame_memory.cache()
    limit, frames.limit = frames.limit, 0
    monkeypatch.setattr(frame_memory, "_kept", [])
    frames.trim(clear=True)
    yield
    gc.collect()
    frames.limit = limit
    frames.trim(clear=True)


def test_a_large_frame_starts_on_a_huge_page_and_is_writable_at_its_exact_length():
    frame = allocate_frame(10 * MB + 3)
    assert frame.nbytes == 10 * MB + 3
    assert frame.format == "B"
    assert not frame.readonly
    assert address(frame) % HUGE_PAGE == 0
    frame[-3:] = b"end"
    assert bytes(frame[-3:]) == b"end"
    assert isinstance(allocate_frame(HUGE_PAGE_THRESHOLD - 1), bytearray)  # small: as before


def test_memory_goes_back_once_what_was_made_of_the_frame_is_gone():
    cache = FrameCache(limit=2**30)
    frame = cache.frame(10 * MB)
    where = address(frame)
    array = np.frombuffer(frame, dtype="u1")  # a consumer's view keeps the frame
    del frame
    assert cache.nbytes == 0
    other = cache.frame(10 * MB)  # so this one needs memory of its own
    assert address(other) != where
    del array
    assert cache.nbytes == 5 * HUGE_PAGE  # 10 MB rounded up to huge pages
    again = cache.frame(9 * MB)  # fits: the same memory, read into again
    assert address(again) == where
    assert cache.nbytes == 0


def test_a_cached_mapping_serves_only_frames_that_fill_at_least_half_of_it():
    cache = FrameCache(limit=2**30)
    cache.frame(40 * MB)  # let go of at once: cached
    big = cache.nbytes
    small = cache.frame(8 * MB)  # 40 MB of memory for 8: no, memory of its own
    assert cache.nbytes == big
    reused = frame_memory.stats["reused_frames"]
    cache.frame(30 * MB)
    assert frame_memory.stats["reused_frames"] == reused + 1
    assert small.nbytes == 8 * MB


def test_a_mapping_reused_for_a_smaller_frame_gives_back_the_tail_it_does_not_use():
    process = psutil.Process()
    cache = FrameCache(limit=2**30)
    big = cache.frame(20 * HUGE_PAGE)
    big[:] = b"\1" * big.nbytes  # all of it in the RSS
    where = address(big)
    del big
    before = process.memory_info().rss
    small = cache.frame(11 * HUGE_PAGE)
    assert address(small) == where  # the same mapping: 11 fills more than half of 20
    assert process.memory_info().rss < before - 8 * HUGE_PAGE  # its last 9 pages went


def test_the_cache_keeps_at_most_its_limit_dropping_the_oldest():
    cache = FrameCache(limit=12 * HUGE_PAGE)
    frames = [cache.frame(5 * HUGE_PAGE) for _ in range(3)]
    first = address(frames[0])
    del frames
    assert cache.nbytes == 10 * HUGE_PAGE  # the first one given back went
    assert address(cache.frame(5 * HUGE_PAGE)) != first
    nothing = FrameCache(limit=0)  # 0: nothing is kept
    nothing.frame(5 * MB)
    assert nothing.nbytes == 0


def test_idle_mappings_are_freed_when_trimmed_or_when_the_next_one_comes_back(monkeypatch):
    cache = FrameCache(limit=2**30)
    cache.frame(5 * MB)
    monkeypatch.setattr(frame_memory, "IDLE_SECONDS", 0.0)
    cache.trim()
    assert cache.nbytes == 0
    cache.frame(5 * MB)
    cache.frame(7 * MB)  # given back: the idle 5 MB one goes
    assert cache.nbytes == 4 * HUGE_PAGE
    monkeypatch.setattr(frame_memory, "IDLE_SECONDS", 30.0)
    cache.trim()
    assert cache.nbytes == 4 * HUGE_PAGE
    cache.trim(clear=True)
    assert cache.nbytes == 0


def test_frames_let_go_of_on_other_threads_come_back_whole():
    cache = FrameCache(limit=2**30)
    arrays = [np.frombuffer(cache.frame(5 * MB), dtype="u1") for _ in range(8)]

    def drop(i: int) -> None:
        arrays[i] = None  # type: ignore[call-overload]

    threads = [threading.Thread(target=drop, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes == 8 * 3 * HUGE_PAGE
    frames = [cache.frame(5 * MB) for _ in range(8)]
    assert len({address(f) for f in frames}) == 8  # each mapping handed out once
    assert cache.nbytes == 0


async def test_a_tcp_receiver_reads_the_next_large_message_into_the_last_ones_memory():
    frame_memory.keep_frames()  # as a worker's process does
    assert frame_memory.cache().limit == 2**30  # comm.frame-cache
    accepted: asyncio.Queue = asyncio.Queue()
    listener = await transport.listen("tcp://127.0.0.1:0", accepted.put_nowait, FrameLimits())
    try:
        client = await transport.connect(listener.address, limits=FrameLimits())
        server = await asyncio.wait_for(accepted.get(), 5)
        payload = np.arange(12 * MB // 8, dtype="f8")
        before = dict(frame_memory.stats)
        await client.write_frames([b"head", payload])
        first = await server.read_frames()
        assert np.array_equal(np.frombuffer(first[1], dtype="f8"), payload)
        where = address(first[1])
        del first
        await client.write_frames([b"head", payload[::-1].copy()])
        second = await server.read_frames()
        assert address(second[1]) == where
        assert np.array_equal(np.frombuffer(second[1], dtype="f8"), payload[::-1])
        assert frame_memory.stats["reused_frames"] == before["reused_frames"] + 1
        assert frame_memory.stats["new_frames"] == before["new_frames"] + 1
        client.abort()
        server.abort()
    finally:
        await listener.stop()


@pytest.mark.parametrize("thresholds", [Thresholds(), Thresholds(spill=None)],
                         ids=["spill", "pause"])
def test_a_worker_frees_the_cache_before_it_would_spill_or_pause(thresholds):
    plenty = memory_watch(2**40, thresholds)
    frame = frame_memory.frame(64 * MB)
    frame[::4096] = b"\1" * len(range(0, frame.nbytes, 4096))  # in the RSS
    del frame
    assert frame_memory.cached_bytes() >= 64 * MB
    measured = plenty.measure()
    assert frame_memory.cached_bytes() >= 64 * MB  # under every threshold: kept
    memory_watch(int(measured * 1.1), thresholds).measure()  # over the threshold by itself
    assert frame_memory.cached_bytes() == 0


def test_only_a_process_hosting_a_worker_keeps_frames():
    frame = frame_memory.frame(8 * MB)  # a client's or a scheduler's: nobody would trim
    del frame
    assert frame_memory.cached_bytes() == 0
    memory_watch(2**40)  # a worker's memory watch
    frame = frame_memory.frame(8 * MB)
    del frame
    assert frame_memory.cached_bytes() == 4 * HUGE_PAGE


def test_a_worker_keeps_at_most_an_eighth_of_its_memory_limit():
    memory_watch(2**30)
    assert frame_memory.cache().limit == 2**27
    frame = frame_memory.frame(200 * MB)  # over it: not kept
    del frame
    assert frame_memory.cached_bytes() == 0
    memory_watch(2**40)  # a larger worker in the same process: comm.frame-cache
    assert frame_memory.cache().limit == 2**30
    frame = frame_memory.frame(200 * MB)
    del frame
    assert frame_memory.cached_bytes() == 96 * HUGE_PAGE


def test_when_the_larger_worker_leaves_the_cache_shrinks_to_the_smaller_ones_share():
    small, large = memory_watch(2**30), memory_watch(2**40)
    assert frame_memory.cache().limit == 2**30  # comm.frame-cache: the larger one's share
    each = -(-60 * MB // HUGE_PAGE) * HUGE_PAGE  # 60 MB, in whole huge pages
    frames = [frame_memory.frame(60 * MB) for _ in range(3)]
    del frames
    assert frame_memory.cached_bytes() == 3 * each
    large.close()
    assert frame_memory.cache().limit == 2**27  # an eighth of the smaller one's limit
    assert frame_memory.cached_bytes() == 2 * each  # the oldest went: 3 would be over
    small.close()
    assert frame_memory.cached_bytes() == 0


def test_the_last_worker_of_the_process_to_close_empties_the_cache():
    first, second = memory_watch(2**40), memory_watch(2**40)
    frame = frame_memory.frame(8 * MB)
    del frame
    first.close()
    assert frame_memory.cached_bytes() == 4 * HUGE_PAGE  # the other worker still keeps it
    second.close()
    assert frame_memory.cached_bytes() == 0
    frame = frame_memory.frame(8 * MB)
    del frame
    assert frame_memory.cached_bytes() == 0  # and nothing more is kept


def test_a_worker_without_a_memory_limit_frees_idle_frames_at_its_heartbeat(monkeypatch):
    memory = memory_watch(0)  # no limit: no memory monitor, only heartbeats read its metrics
    frame = frame_memory.frame(8 * MB)
    del frame
    memory.metrics()
    assert frame_memory.cached_bytes() == 4 * HUGE_PAGE  # not idle yet
    monkeypatch.setattr(frame_memory, "IDLE_SECONDS", 0.0)
    memory.metrics()
    assert frame_memory.cached_bytes() == 0


def frame_stats() -> dict[str, int]:
    return {**frame_memory.stats, "cached": frame_memory.cached_bytes()}


def test_a_worker_reads_each_fetched_array_into_the_memory_of_the_last_one_it_let_go():
    with corral.config.set({"comm.shared-memory.enabled": False}), \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        maker, reader = sorted(client.nthreads())
        before = client.run(frame_stats)[reader]
        for fill in (1, 2, 3):
            made = client.submit(filled, 8 * MB, fill, workers=[maker], pure=False)
            assert client.submit(total, made, workers=[reader]).result() == fill * 8 * MB
            del made  # released on both: the reader's frame goes back to its cache
            wait_until_blocking(lambda: client.run(frame_stats)[reader]["cached"] > 0)
        after = client.run(frame_stats)[reader]
        assert after["new_frames"] - before["new_frames"] == 1
        assert after["reused_frames"] - before["reused_frames"] == 2
