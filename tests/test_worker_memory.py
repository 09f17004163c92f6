"""The worker's memory rules (pure) and its spilling store, without a network."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from corral import messages as msgs
from corral.exceptions import BadMemoryLimit
from corral.memory_limit import MIN_MEMORY_LIMIT, parse_memory_limit, system_memory
from corral.worker import events as ev
from corral.worker.memory import Thresholds
from corral.worker.spill import SpillBuffer, dump_frames, load_frames
from corral.worker.state import WorkerState

from .test_worker_state import compute, started, success

MiB = 2**20
LIMIT = 1000 * MiB  # target 600, spill 700, pause 800 MiB


def usage(sid, rss, managed=0, spill_failed=False):
    return ev.MemoryUsage(stimulus_id=sid, rss=rss * MiB, managed=managed * MiB,
                          spill_failed=spill_failed)


def paused(sid, flag):
    return ev.SendToScheduler(stimulus_id=sid, msg=msgs.WorkerPaused(stimulus_id=sid,
                                                                      paused=flag))


@pytest.fixture
def ws():
    state = WorkerState("tcp://me:1", nthreads=1, memory_limit=LIMIT)
    yield state
    state.validate()


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [
    (None, 0), ("0", 0), (0, 0), ("none", 0), ("4GiB", 4 * 2**30), (1e9, 10**9),
    ("1e9", 10**9), ("500 MB", 500 * 10**6), ("300MiB", 300 * MiB),
])  # fmt: skip
def test_memory_limits_parse(given, expected):
    assert parse_memory_limit(given) == expected


def test_auto_and_fractions_are_shares_of_this_machine():
    total = system_memory()
    assert parse_memory_limit("auto", share=0.25) == int(total * 0.25)
    assert parse_memory_limit("0.5") == parse_memory_limit(0.5) == int(total * 0.5)


@pytest.mark.parametrize("given", ["20MB", "lots", "-5GB", 1])
def test_a_limit_too_small_or_unreadable_is_refused_with_the_reason(given):
    with pytest.raises(BadMemoryLimit) as info:
        parse_memory_limit(given)
    assert "too small" in str(info.value) or "not a size" in str(info.value)
    assert str(MIN_MEMORY_LIMIT // MiB) in str(info.value) or "not a size" in str(info.value)


def test_thresholds_must_be_fractions():
    with pytest.raises(ValueError, match=r"pause=1\.5"):
        Thresholds(pause=1.5)


# -- decisions (exact actions) ------------------------------------------------------------


def test_managed_data_over_target_is_spilled_to_target(ws):
    assert ws.handle(usage("m1", rss=500, managed=400)) == []
    assert ws.handle(usage("m2", rss=650, managed=620)) == [
        ev.Spill(stimulus_id="m2", target=600 * MiB)]


def test_process_memory_over_spill_spills_until_back_under_target(ws):
    # 750 MiB of RSS, 300 of it managed: 150 must go for RSS to be back at 600.
    assert ws.handle(usage("m1", rss=750, managed=300)) == [
        ev.Spill(stimulus_id="m1", target=150 * MiB, trim=True)]


def test_pausing_stops_new_tasks_and_fetches_until_memory_falls(ws):
    # Nothing managed to spill: freed memory the allocators keep goes back (trim).
    assert ws.handle(usage("m1", rss=850, managed=0)) == [
        ev.Spill(stimulus_id="m1", target=0, trim=True), paused("m1", True)]
    assert ws.handle(compute("x")) == []  # queued, not started
    assert ws.handle(compute("y", {"a": ("tcp://p:1",)})) == []  # nor fetched
    assert ws.handle(usage("m2", rss=820, managed=0)) == [  # still paused: said once
        ev.Spill(stimulus_id="m2", target=0, trim=True)]
    assert ws.handle(usage("m3", rss=500, managed=0)) == [
        paused("m3", False), *started("m3", "x"),
        ev.GatherDep(stimulus_id="m3", peer="tcp://p:1", keys=("a",), total_nbytes=10)]


def test_a_running_task_finishes_while_paused(ws):
    ws.handle(compute("x"), compute("z"))
    assert ws.handle(usage("m1", rss=900, managed=100)) == [
        ev.Spill(stimulus_id="m1", target=0, trim=True), paused("m1", True)]
    out = ws.handle(success("x"))
    assert [type(i.msg) for i in out] == [msgs.TaskFinished]  # z does not start
    assert ws.handle(usage("m2", rss=100)) == [paused("m2", False), *started("m2", "z")]


def test_a_failing_disk_pauses_once_over_spill(ws):
    assert ws.handle(usage("m1", rss=650, managed=650, spill_failed=True)) == [
        ev.Spill(stimulus_id="m1", target=600 * MiB)]
    assert ws.handle(usage("m2", rss=720, managed=650, spill_failed=True)) == [
        ev.Spill(stimulus_id="m2", target=530 * MiB, trim=True), paused("m2", True)]


def test_no_limit_means_no_spilling_and_no_pausing():
    state = WorkerState("tcp://me:1", nthreads=1)
    assert state.handle(usage("m1", rss=10**6, managed=10**6)) == []


# -- the store ------------------------------------------------------------------------------


def test_frames_round_trip_compressed_where_it_pays():
    zeros, noise = np.zeros(100_000), np.random.default_rng(0).random(100_000)
    for value in (zeros, noise, {"a": [1, 2, 3]}):
        frames = dump_frames(value)
        back = load_frames(bytearray(b"".join(frames)))
        assert repr(back) == repr(value)
    assert sum(map(len, dump_frames(zeros))) < zeros.nbytes / 10
    assert sum(map(len, dump_frames(noise))) > noise.nbytes


class Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.payload = bytes(200_000)


async def test_spill_buffer_spills_lru_reads_back_and_keeps_unpicklables(tmp_path, caplog):
    buffer = SpillBuffer(str(tmp_path), target=250_000)
    try:
        bad = Unpicklable()
        buffer["bad"] = bad
        for i in range(3):
            buffer[f"x{i}"] = np.full(100_000 // 8, i, dtype="f8")
        while buffer.futures:  # spilling runs on the buffer's thread
            await asyncio.sleep(0.01)
        assert buffer.managed <= 250_000 + 200_000
        assert "bad" in buffer.fast
        assert buffer.unspillable == {"bad"}
        assert "x0" in buffer.disk  # least recently used first
        got = await buffer.async_get(["x0", "x2", "bad"])
        assert (got["x0"][0], got["x2"][0], got["bad"]) == (0, 2, bad)
        assert buffer.spilled_total >= 100_000
        assert [r.message for r in caplog.records if "cannot spill 'bad'" in r.message]
        del buffer["bad"]
        assert not buffer.unspillable
        buffer.clear()  # without reading anything back from disk
        assert (len(buffer.fast), len(buffer.disk)) == (0, 0)
    finally:
        buffer.close()


async def test_spill_buffer_on_a_failing_disk_keeps_the_value_and_says_why(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    buffer = SpillBuffer(str(tmp_path), target=1)
    try:
        tmp_path.chmod(0o500)  # as root this does not stop writes: remove the directory
        for child in tmp_path.iterdir():
            child.unlink()
        tmp_path.rmdir()
        buffer["x"] = np.ones(1000)
        while buffer.futures:
            await asyncio.sleep(0.01)
        assert "x" in buffer.fast
        assert buffer.spill_error is not None
        assert buffer["x"][0] == 1
    finally:
        buffer.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trimming_gives_freed_heap_memory_back_to_the_system():
    """What a worker does over its spill threshold: without it, 200 MB freed inside the
    heap (a few live blocks keep the heap from shrinking by itself) stay in its RSS."""
    code = (
        "import os, psutil\n"
        "from corral.worker.memory_watch import _release_freed_memory\n"
        "p = psutil.Process()\n"
        "blobs = [os.urandom(1000) for _ in range(200_000)]\n"
        "kept = blobs[::200]\n"
        "del blobs\n"
        "before = p.memory_info().rss\n"
        "_release_freed_memory()\n"
        "print(before - p.memory_info().rss)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ, "MALLOC_TRIM_THRESHOLD_":
                                                       "65536"})
    assert int(done.stdout) > 100 * MiB
