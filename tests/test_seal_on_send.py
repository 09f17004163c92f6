"""Values placed in shared memory when first sent (``comm.shared-memory.place-results:
on-send``, the default): sealed once, held sealed from then on, so that later sends copy
nothing; values that never move are never sealed; a value let go of meanwhile is not
brought back."""

from __future__ import annotations

import asyncio
import gc
import types
import weakref

import numpy as np
import pytest

import corral
from corral import Client, LocalCluster
from corral.comm import segments, shm
from corral.worker import shared_results
from corral.worker.serving import Serving
from corral.worker.spill import SpillBuffer

pytestmark = [pytest.mark.skipif(not shm.available(), reason="shared memory needs Linux memfds"),
              pytest.mark.timeout(60)]

LARGE = 2 * 2**20  # over the default 1 MiB threshold


@pytest.fixture(autouse=True)
def own_cache(monkeypatch):
    monkeypatch.setattr(shm, "_cache", None)
    monkeypatch.setattr(shm, "_open_channels", weakref.WeakSet())
    yield
    shm.trim_cache(clear=True)


def test_on_send_is_the_default_and_places_nothing_as_made():
    assert corral.config.get("comm.shared-memory.place-results") == "on-send"
    assert shared_results.seals_on_send()
    assert shared_results.threshold() is None
    array = np.ones(LARGE, dtype="u1")
    assert shared_results.place(array, LARGE) is array
    with corral.config.set({"comm.shared-memory.place-results": False}):
        assert not shared_results.seals_on_send()
    with corral.config.set({"comm.shared-memory.enabled": False}):
        assert not shared_results.seals_on_send()


class _Comm:
    """Sends frames of ``least`` bytes and up through shared memory."""

    def __init__(self, least: int = shm.threshold()) -> None:
        self.least = least

    def sends_shared(self, nbytes: int) -> bool:
        return nbytes >= self.least


def _serving(store) -> Serving:
    return Serving(types.SimpleNamespace(data=store))  # type: ignore[arg-type]


@pytest.fixture(params=["dict", "spill"])
def store(request, tmp_path):
    if request.param == "dict":
        held: dict = {}
        yield held
        held.clear()  # a sealed array left here would keep its segment open for later tests
        return
    buffer = SpillBuffer(str(tmp_path), target=2**40)
    yield buffer
    buffer.clear()


def _held(store, key):
    return store.fast.d.get(key) if isinstance(store, SpillBuffer) else store.get(key)


async def test_a_value_sent_is_sealed_and_held_sealed(store):
    value = np.arange(LARGE, dtype="u1")
    small = np.ones(1000, dtype="u1")
    store["x"], store["small"] = value, small
    serving = _serving(store)
    sent = await serving._sealed_to_send(_Comm(), {"x": value, "small": small})
    assert sent["small"] is small  # too small to go through shared memory
    assert sent["x"] is not value
    assert segments.sealed_segment(sent["x"]) is not None
    np.testing.assert_array_equal(sent["x"], value)
    assert _held(store, "x") is sent["x"]  # the worker keeps the sealed copy
    if isinstance(store, SpillBuffer):
        assert store.fast.weights["x"] == LARGE  # at the size it had
    again = await serving._sealed_to_send(_Comm(), {"x": sent["x"]})
    assert again["x"] is sent["x"]  # sealed already: sent as it is


async def test_nothing_is_sealed_for_a_comm_that_sends_through_the_socket(store):
    value = np.arange(LARGE, dtype="u1")
    store["x"] = value
    data = {"x": value}
    assert await _serving(store)._sealed_to_send(_Comm(least=2**62), data) is data
    assert _held(store, "x") is value


async def test_two_fetches_at_once_seal_once(store):
    value = np.arange(LARGE, dtype="u1")
    store["x"] = value
    serving = _serving(store)
    before = segments.stats["sealed_buffers"]
    one, two = await asyncio.gather(serving._sealed_to_send(_Comm(), {"x": value}),
                                    serving._sealed_to_send(_Comm(), {"x": value}))
    assert one["x"] is two["x"] is _held(store, "x")
    assert segments.stats["sealed_buffers"] - before == 1
    assert not serving._sealing


@pytest.mark.parametrize("meanwhile", ["released", "replaced"])
async def test_a_value_let_go_of_while_it_is_sealed_is_not_brought_back(store, meanwhile):
    value = np.arange(LARGE, dtype="u1")
    store["x"] = value
    serving = _serving(store)
    sending = asyncio.ensure_future(serving._sealed_to_send(_Comm(), {"x": value}))
    await asyncio.sleep(0)  # the copy has begun on its thread
    other = np.zeros(LARGE, dtype="u1")
    if meanwhile == "released":
        del store["x"]
    else:
        store["x"] = other
    sent = await sending
    assert segments.sealed_segment(sent["x"]) is not None  # this send still copies nothing
    if meanwhile == "released":
        assert "x" not in store
    else:
        assert _held(store, "x") is other


def test_a_spill_buffer_swaps_only_what_it_holds_in_memory(tmp_path):
    buffer = SpillBuffer(str(tmp_path), target=2**40)
    old, new = np.ones(10), np.zeros(10)
    buffer["x"] = old
    assert not buffer.swap("x", np.ones(10), new)  # not the object held
    assert not buffer.swap("y", old, new)
    assert buffer.swap("x", old, new)
    assert buffer.fast.d["x"] is new
    buffer.evict_until_below_target(0)  # on disk: nothing in memory to swap
    assert not buffer.swap("x", new, old)
    buffer.clear()


def make(nbytes, fill):
    return np.full(nbytes, fill, dtype="u1")


def total(array):
    return int(array.sum())


def counts():
    return dict(segments.stats)


def held_sealed(key):
    value = corral.get_worker().data[key]
    return segments.sealed_segment(value) is not None


@pytest.mark.parametrize("setting", ["on-send", False])
def test_between_workers_a_value_is_copied_once_when_it_first_moves(setting):
    with corral.config.set({"comm.shared-memory.place-results": setting}), \
            LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        maker, *readers = sorted(client.nthreads())
        kept = client.submit(make, LARGE, 7, workers=[maker], pure=False)
        made = client.submit(make, LARGE, 3, workers=[maker], pure=False)
        corral.wait([kept, made])  # not gathered: the client reading them would move them
        before = client.run(counts)[maker]
        for reader in readers:  # two peers read it: two sends
            assert client.submit(total, made, workers=[reader]).result() == 3 * LARGE
        after = client.run(counts)[maker]
        sealed = after["sealed_buffers"] - before["sealed_buffers"]
        sealed_sends = after["sealed_frames_sent"] - before["sealed_frames_sent"]
        copied_sends = after["sent_frames"] - before["sent_frames"] - sealed_sends
        if setting == "on-send":
            assert (sealed, sealed_sends, copied_sends) == (1, 2, 0)
            assert client.run(held_sealed, made.key, workers=[maker])[maker]
        else:
            assert (sealed, sealed_sends, copied_sends) == (0, 0, 2)
            assert not client.run(held_sealed, made.key, workers=[maker])[maker]
        assert not client.run(held_sealed, kept.key, workers=[maker])[maker]  # never moved
        del kept, made
        gc.collect()
