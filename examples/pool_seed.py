"""The seed's ``Pool`` API: map a function over a cluster, ``.get()`` each result.

    python examples/pool_seed.py                     # on a local cluster of its own
    python examples/pool_seed.py tcp://HOST:8786     # on a running scheduler

Given an address, it finds the token as ``corral worker`` does (the scheduler file, or
``CORRAL_TOKEN``).

The seed started its cluster with ``Cluster(hosts=['127.0.0.1:8788', ...],
center='127.0.0.1:8787')``; that works as written too (see DESIGN.md), but fixed ports
may be taken, so this script starts a ``LocalCluster`` on free ports instead.
"""

import sys

from corral import LocalCluster, Pool


def main(center: str) -> None:
    p = Pool(center)
    a, b, d = p.map(lambda x: x * 10, [1, 2, 3])
    assert (a.get(), b.get(), d.get()) == (10, 20, 30)
    print("map:", [a.get(), b.get(), d.get()])

    power = p.apply(pow, (2, 10))
    print("apply:", power.get())
    p.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
            main(c.scheduler_address)
