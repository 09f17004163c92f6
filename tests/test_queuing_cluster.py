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


def tree_graph(roots: int) -> dict:
    """A dask graph: ``roots`` tasks of ``make``, summed pairwise up to ``("add", 0)``."""
    dsk: dict = {("make", i): (make, i) for i in range(roots)}
    layer = [("make", i) for i in range(roots)]
    level = 0
    while len(layer) > 1:
        level += 1
        pairs = [layer[i:i + 2] for i in range(0, len(layer), 2)]
        layer = [("add", level, j) if len(pair) == 2 else pair[0] for j, pair in enumerate(pairs)]
        dsk.update({key: (add, *pair) for key, pair in zip(layer, pairs, strict=True)
                    if len(pair) == 2})
    dsk[("add", 0)] = (add, layer[0], 0)
    return dsk


@pytest.mark.timeout(180)
def test_a_wide_map_reduce_keeps_worker_data_bounded_by_the_saturation():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      worker_saturation=1.1) as cluster, \
            Client(cluster.scheduler_address) as client:
        # The whole graph in one message: had the tree followed the roots in later
        # messages, roots finished before their sums existed would pile up meanwhile.
        assert client.get(tree_graph(ROOTS), ("add", 0)) == ROOTS * 1_000_000
        peaks = client.run(peak_keys)
    # Sent at once (worker_saturation=inf), each worker held hundreds of 1 MB roots.
    assert 0 < max(peaks.values()) <= 40, peaks
