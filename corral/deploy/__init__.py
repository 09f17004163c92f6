"""Deployment: ``LocalCluster`` and the seed's ``Cluster(hosts=..., center=...)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Cluster", "LocalCluster"]


def __getattr__(name: str) -> Any:
    # Imported on first use: a worker or nanny imports ``corral.deploy.lifeline`` and
    # ``corral.deploy.process`` only, not the client and scheduler a cluster needs.
    if name == "Cluster":
        from corral.deploy.cluster import Cluster

        return Cluster
    if name == "LocalCluster":
        from corral.deploy.local import LocalCluster

        return LocalCluster
    raise AttributeError(f"module 'corral.deploy' has no attribute {name!r}")


if TYPE_CHECKING:
    from corral.deploy.cluster import Cluster
    from corral.deploy.local import LocalCluster
