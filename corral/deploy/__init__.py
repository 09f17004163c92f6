"""Deployment: ``LocalCluster`` and the seed's ``Cluster(hosts=..., center=...)``."""

from corral.deploy.cluster import Cluster
from corral.deploy.local import LocalCluster

__all__ = ["Cluster", "LocalCluster"]
