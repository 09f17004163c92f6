"""Deployment: ``LocalCluster`` and the seed's ``Cluster(hosts=..., center=...)``.

Each loads on first use: ``corral scheduler`` imports ``corral.deploy.dashboard``
without the workers and processes a cluster needs.
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
