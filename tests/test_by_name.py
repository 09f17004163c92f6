"""h5py files and datasets travel by name and are opened again where they land, as
dask.distributed ships them; one open for writing is refused with a clear line."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from corral import Client, LocalCluster
from corral.protocol import dumps_pickle

h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")


@pytest.fixture
def h5(tmp_path):
    path = str(tmp_path / "data.h5")
    with h5py.File(path, "w") as f:
        f["group/x"] = np.arange(100.0)
    with h5py.File(path, "r") as f:
        yield f


def test_files_groups_and_datasets_are_opened_again_by_name(h5):
    assert pickle.loads(dumps_pickle(h5)).filename == h5.filename
    assert list(pickle.loads(dumps_pickle(h5["group"]))) == ["x"]
    assert (pickle.loads(dumps_pickle(h5["group/x"]))[:3] == [0.0, 1.0, 2.0]).all()


def test_a_file_open_for_writing_is_refused_saying_what_to_do(tmp_path):
    with h5py.File(str(tmp_path / "w.h5"), "w") as f, \
            pytest.raises(TypeError, match=r"open it read-only \(mode='r'\)"):
        dumps_pickle(f)


def test_an_array_read_from_an_h5py_dataset_computes_on_the_cluster(h5):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        x = da.from_array(h5["group/x"], chunks=25)
        assert x.sum().compute(scheduler=client) == sum(range(100))
