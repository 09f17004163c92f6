"""A dask.array computation on corral, through dask's scheduler interface ``client.get``.

Any dask collection computes on a corral cluster with ``.compute(scheduler=client.get)``
(or ``dask.compute(..., scheduler=client.get)``): the chunks are generated, transposed
and reduced on the workers. The same graph is then computed with dask's local threaded
scheduler, and the two results compared.

    pip install "dask[array]"
    python examples/dask_array.py [SCHEDULER_ADDRESS]
"""

import sys

import dask.array as da
import numpy as np

from corral import Client, LocalCluster


def main(address: str) -> None:
    x = da.random.default_rng(0).random((4000, 4000), chunks=(1000, 1000))
    y = (x + x.T).mean(axis=0)[:5]  # 16 random chunks, each added to its mirror image

    with Client(address) as client:
        on_corral = y.compute(scheduler=client.get)
    on_threads = y.compute(scheduler="threads")

    print("corral:      ", np.array2string(on_corral, precision=6))
    print("dask threads:", np.array2string(on_threads, precision=6))
    if not np.allclose(on_corral, on_threads):
        sys.exit("the results differ")
    print("the results match")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
            main(c.scheduler_address)
