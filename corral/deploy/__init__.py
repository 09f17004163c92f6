"""Deployment: ``LocalCluster``, the seed's ``Cluster(hosts=..., center=...)``, workers as
batch jobs (``SLURMCluster``, ``PBSCluster``, ``SGECluster``, ``LSFCluster``), and the
``ClusterManager`` base they share (``corral.deploy.spec``), with adaptive scaling.

Both are imported on first use: ``corral scheduler`` imports ``corral.deploy.dashboard``,
and a worker or nanny process ``corral.deploy.lifeline`` and ``corral.deploy.process``,
without the scheduler, client and processes a cluster brings (a restarted worker is back
sooner).
"""

import typing as _typing

from corral._lazy import lazy_exports as _lazy_exports

__getattr__, __dir__ = _lazy_exports(
    __name__,
    {"Cluster": "corral.deploy.cluster", "LocalCluster": "corral.deploy.local",
     "ClusterManager": "corral.deploy.spec", "Job": "corral.deploy.spec",
     "WorkerSpec": "corral.deploy.spec", "Adaptive": "corral.deploy.adapt_loop",
     **{name: "corral.deploy.jobqueue.cluster" for name in (
         "JobQueueCluster", "SLURMCluster", "PBSCluster", "SGECluster", "LSFCluster")}},
)

if _typing.TYPE_CHECKING:
    from corral.deploy.adapt_loop import Adaptive
    from corral.deploy.cluster import Cluster
    from corral.deploy.jobqueue.cluster import (
        JobQueueCluster,
        LSFCluster,
        PBSCluster,
        SGECluster,
        SLURMCluster,
    )
    from corral.deploy.local import LocalCluster
    from corral.deploy.spec import ClusterManager, Job, WorkerSpec

__all__ = ["Adaptive", "Cluster", "ClusterManager", "Job", "JobQueueCluster", "LSFCluster",
           "LocalCluster", "PBSCluster", "SGECluster", "SLURMCluster", "WorkerSpec"]
