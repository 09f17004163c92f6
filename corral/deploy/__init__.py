"""Deployment: ``LocalCluster`` and the seed's ``Cluster(hosts=..., center=...)``.

Both are imported on first use: ``corral scheduler`` imports ``corral.deploy.dashboard``,
and a worker or nanny process ``corral.deploy.lifeline`` and ``corral.deploy.process``,
without the scheduler, client and processes a cluster brings (a restarted worker is back
sooner).
"""

import typing as _typing

from corral._lazy import lazy_exports as _lazy_exports

__getattr__, __dir__ = _lazy_exports(
    __name__, {"Cluster": "corral.deploy.cluster", "LocalCluster": "corral.deploy.local"}
)

if _typing.TYPE_CHECKING:
    from corral.deploy.cluster import Cluster
    from corral.deploy.local import LocalCluster

__all__ = ["Cluster", "LocalCluster"]
