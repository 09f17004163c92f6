"""Root-task queuing on a real cluster: a wide map-reduce keeps each worker's data small."""

from __future__ import annotations

import pytest

from corral import Client, LocalCluster

ROOTS = 2000


def make(i):
    """1 MB; records how many keys its worker holds when it starts."""
    from corral import get_worker

    worker = get_worker()
    held = len(worker.data)
    worker.peak_keys = max(getattr(worker, "peak_keys", 0), held)  # type: ignore[attr-defined]
    return bytearray(1_000_000)


def add(a, b):
    return (len(a) if isinstance(a, bytearray) else a) + (len(b) if isinstance(b, bytearray)
                                                           else b)


def peak_keys():
    from corral import get_worker

    return getattr(get_worker(), "peak_keys", 0)


@pytest.mark.timeout(180)
def test_a_wide_map_reduce_keeps_worker_data_bounded_by_the_saturation():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      worker_saturation=1.1) as cluster, \
            Client(cluster.scheduler_address) as client:
        layer = client.map(make, range(ROOTS), pure=False)
        while len(layer) > 1:  # pairwise, as a tree
            layer = [client.submit(add, *layer[i:i + 2], pure=False) if i + 1 < len(layer)
                     else layer[i] for i in range(0, len(layer), 2)]
        assert layer[0].result() == ROOTS * 1_000_000
        peaks = client.run(peak_keys)
    # Sent at once (worker_saturation=inf), each worker held hundreds of 1 MB roots.
    assert 0 < max(peaks.values()) <= 40, peaks
