"""What the client's modules need of each other and of a cluster, named as interfaces.

``future``, ``waiting``, ``progress``, ``executor`` and ``dask_graph`` depend on these
protocols, never on ``AsyncClient`` itself, so imports point one way: ``client`` →
``future`` → ``interface``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from corral.security import Security


class ClusterLike(Protocol):
    """A running cluster a client can connect to (``LocalCluster``, ``Cluster``)."""

    @property
    def scheduler_address(self) -> str: ...

    @property
    def security(self) -> Security | None: ...
