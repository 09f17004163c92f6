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
from corral.exceptions import LostWritesError
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


@pytest.mark.timeout(60)
def test_writing_into_an_in_memory_zarr_array_is_refused_and_reading_one_works():
    """Workers would each write into their own copy of it, and every write would be lost
    (dask.distributed refuses it too); reading one is fine: the copies hold the data."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        target = zarr.zeros((10,), chunks=(5,), dtype="i8")
        with pytest.raises(LostWritesError, match=r"in-memory zarr array.*path or URL"):
            da.store(da.arange(10, chunks=5), target, lock=False, scheduler=client)
        with dask.config.set(scheduler=client), pytest.raises(LostWritesError):
            da.arange(10, chunks=5).to_zarr(target)
        source = zarr.array(np.arange(10), chunks=(5,))
        assert da.from_zarr(source).sum().compute(scheduler=client) == 45
