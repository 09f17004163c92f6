"""dask's in-process locks become cluster-wide corral locks: ``da.store(..., lock=True)``
into a zarr array whose chunks straddle dask's, from two worker processes, loses no
write (with dask's own ``SerializableLock`` per process, a run lost tens of values)."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest
from dask.utils import SerializableLock

from corral import Client, LocalCluster
from corral.client.coordination import Lock
from corral.client.dask_locks import cluster_wide
from corral.protocol import dumps_pickle

zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")


def test_a_task_naming_a_dask_lock_carries_a_cluster_lock_of_the_same_token():
    lock = SerializableLock("tok")
    parts = (b"fn", (1, {"lock": lock}), {})
    swapped = pickle.loads(cluster_wide(dumps_pickle(parts), parts))
    carried = swapped[1][1]["lock"]
    assert isinstance(carried, Lock)
    assert carried.name == "dask-lock-tok"
    plain = (b"fn", (1, 2), {})
    assert cluster_wide(dumps_pickle(plain), plain) == dumps_pickle(plain)  # untouched


@pytest.mark.timeout(120)
def test_store_with_lock_true_loses_no_write_across_worker_processes(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=2, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        path = str(tmp_path / "z")
        z = zarr.open_array(path, mode="w", shape=(700,), chunks=(10,), dtype="i8",
                            fill_value=0)
        da.store(da.arange(1, 701, chunks=7), z, lock=True, scheduler=client)
        assert (zarr.open_array(path, mode="r")[:] == np.arange(1, 701)).all()
        with dask.config.set(scheduler=client):  # to_zarr(mode="w") asks for lock=True
            da.arange(100, chunks=30).to_zarr(str(tmp_path / "w"), mode="w")
        assert (zarr.open_array(str(tmp_path / "w"), mode="r")[:] == np.arange(100)).all()
