"""Large NumPy results sealed in shared memory by the worker that made them
(corral.worker.shared_results, corral.comm.segments.seal): found again when sent, lent
as they are, copy-on-write on both sides, and gone with their object."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import corral
from corral import Client, LocalCluster
from corral.comm import frame_memory, segments, shm
from corral.sizeof import sizeof
from corral.worker import shared_results
from tests._helpers import wait_until_blocking

pytestmark = pytest.mark.skipif(not shm.available(), reason="shared memory needs Linux memfds")

LARGE = 2 * 2**20  # over the default 1 MiB threshold


def sealed_alive() -> int:
    return len(segments._sealed)


def test_a_sealed_buffer_is_found_whole_and_only_whole():
    data = np.arange(LARGE, dtype="u1")
    view = segments.seal(memoryview(data))
    assert view is not None
    assert bytes(view[:5]) == bytes(data[:5])
    assert view == memoryview(data)
    segment = segments.sealed_segment(view)
    assert segment is not None
    array = np.frombuffer(view, dtype="u1")
    assert segments.sealed_segment(memoryview(array)) is segment
    assert segments.sealed_segment(memoryview(array[1:])) is None  # a part is not the whole
    assert segments.sealed_segment(memoryview(data)) is None  # the original is not sealed
    assert segments.sealed_segment(bytes(view)) is None
    read_only = array.view()
    read_only.flags.writeable = False
    assert segments.sealed_segment(memoryview(read_only)) is None


def test_a_sealed_segment_closes_when_its_object_goes():
    before = sealed_alive()
    array = shared_results.place(np.ones(LARGE, dtype="f8"), 8 * LARGE)
    assert sealed_alive() == before + 1
    del array
    gc.collect()
    assert sealed_alive() == before


@pytest.mark.parametrize("make", [
    lambda: np.arange(LARGE, dtype="i4").reshape(1024, -1),
    lambda: np.asfortranarray(np.arange(LARGE, dtype="f4").reshape(1024, -1)),
])
def test_placing_keeps_the_array_equal_and_writable_and_copy_on_write(make):
    original = make()
    placed = shared_results.place(original, original.nbytes)
    assert placed is not original
    assert segments.sealed_segment(memoryview(placed.reshape(-1, order="A")).cast("B"))
    assert np.array_equal(placed, original)
    assert placed.dtype == original.dtype
    assert placed.flags.f_contiguous == original.flags.f_contiguous
    assert placed.flags.writeable
    placed[0, 0] = -1  # the segment is not written: this page is now the array's own
    assert placed[0, 0] == -1
    again = shared_results.place(placed, placed.nbytes)
    assert again is placed  # already sealed: not copied twice


@pytest.mark.parametrize("value", [
    np.arange(1000, dtype="u1"),  # below the threshold
    np.array([object()] * LARGE),  # items are references
    np.arange(2 * LARGE, dtype="u1")[::2],  # not contiguous
    np.ma.masked_array(np.arange(LARGE, dtype="u1")),  # a subclass
    b"x" * LARGE,  # not an array
], ids=["small", "object", "strided", "subclass", "bytes"])
def test_what_is_not_a_plain_large_array_is_left_as_it_is(value):
    assert shared_results.place(value, sizeof(value)) is value


@pytest.fixture(autouse=True)
def place_from_the_sharing_threshold():
    with corral.config.set({"comm.shared-memory.place-results": True}):
        yield


@pytest.mark.parametrize(("setting", "placed"), [
    (False, False), ("false", False), (None, False), ("none", False), ("0", False),
    (True, True), ("true", True), ("2MiB", True), (LARGE, True), ("3MiB", False),
    ("lots", False), ("on-send", False), ("On-Send", False),
])
def test_placing_can_be_turned_off_or_start_at_a_size(setting, placed, caplog):
    array = np.arange(LARGE, dtype="u1")
    with corral.config.set({"comm.shared-memory.place-results": setting}):
        assert (shared_results.place(array, array.nbytes) is not array) == placed
    if setting == "lots":
        assert "place-results: not a size: 'lots'" in caplog.text


def test_a_read_only_array_is_left_as_it_is():
    read_only = np.arange(LARGE, dtype="u1")
    read_only.flags.writeable = False
    assert shared_results.place(read_only, LARGE) is read_only


# -- between processes -----------------------------------------------------------------


def make(nbytes):
    return np.arange(nbytes, dtype="u1")


def write_first_and_sum(array):
    array[0] = 255  # copy-on-write: the maker's array and the segment stay as they were
    return int(array.sum())


def first(array):
    return int(array[0])


def counts():
    from corral.comm import segments

    return {"sealed_alive": len(segments._sealed), **segments.stats}


def test_a_large_result_moves_between_workers_without_a_copy_and_goes_when_released():
    with corral.config.set({"comm.shared-memory.place-results": LARGE}), \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        maker, reader = sorted(client.nthreads())
        before = client.run(counts)
        made = client.submit(make, LARGE, workers=[maker])
        total = client.submit(write_first_and_sum, made, workers=[reader]).result()
        assert total == int(make(LARGE).sum()) + 255
        assert client.submit(first, made, workers=[maker], pure=False).result() == 0
        assert np.array_equal(made.result(), make(LARGE))  # to the client, lent as well
        after = client.run(counts)
        grew = {k: after[maker][k] - before[maker][k] for k in before[maker]}
        assert grew["sealed_buffers"] == 1
        assert grew["sealed_alive"] == 1
        assert grew["sealed_frames_sent"] == grew["sent_frames"] == 2  # the peer, the client
        assert grew["reused_segments"] == 0
        del made
        client.run(gc.collect)
        wait_until_blocking(lambda: client.run(counts)[maker]["sealed_alive"]
                            == before[maker]["sealed_alive"], timeout=10)


# -- memory: what a worker's memory watch sees -------------------------------------------


MEASURED = 32 * 2**20


def test_placed_results_count_in_the_process_memory_read_or_not():
    import psutil

    from corral.worker import process_memory

    process = psutil.Process()
    gc.collect()
    shm.trim_cache(clear=True)
    frame_memory.trim_cache(clear=True)  # nothing cached that could go mid-test
    base = process_memory.measure(process)
    placed = shared_results.place(np.ones(MEASURED // 8), MEASURED)
    assert segments.sealed_segment(placed) is not None
    # Unread, the pages are in no process's RSS; yet they are this process's to hold.
    assert process.memory_info().rss < base + MEASURED // 2
    assert process_memory.measure(process) > base + 0.9 * MEASURED
    assert placed.sum() == MEASURED // 8  # read: now in the RSS, and counted once only
    assert base + 0.9 * MEASURED < process_memory.measure(process) < base + 1.5 * MEASURED
    # A frame lent by a peer is mapped in full: its pages are not taken for placed ones.
    lent = segments.Segment(MEASURED)
    lent.fill(np.zeros(MEASURED, dtype="u1"))
    frame = segments.map_frame(lent.fd, MEASURED, lambda: None)
    lent.close()
    unread = shared_results.place(np.ones(MEASURED // 8), MEASURED)
    assert process_memory.measure(process) > base + 2.9 * MEASURED
    del placed, unread, frame
    gc.collect()
    # Their two segments are kept for reuse: memory still held, and counted.
    assert shm.cached_bytes()[0] >= 2 * MEASURED
    assert process_memory.measure(process) > base + 1.9 * MEASURED
    shm.trim_cache(clear=True)
    assert process_memory.measure(process) < base + 0.5 * MEASURED


def test_a_spilled_placed_result_frees_its_segment_and_reads_back_as_a_plain_array(tmp_path):
    from corral.worker.spill import SpillBuffer

    data = SpillBuffer(str(tmp_path), target=float(2 * LARGE))
    value = np.arange(LARGE // 8, dtype="f8")
    before = sealed_alive()
    data.put("x", shared_results.place(value.copy(), LARGE), LARGE)
    assert sealed_alive() == before + 1
    data.evict_until_below_target(0)
    assert "x" in data.disk
    assert sealed_alive() == before  # freed as it was spilled, the collector not needed
    back = data["x"]
    assert np.array_equal(back, value)
    assert back.flags.writeable
    assert segments.sealed_segment(back) is None  # an ordinary array in memory
