"""``CorralShuffle``: the dask expression of a corral shuffle, and its graph.

Built on dask's ``SimpleShuffle`` (its parameters, partition filtering and divisions),
with a graph of its own: transfer tasks, a barrier, unpack tasks (``corral.shuffle``).
Imported only once dask.dataframe is (``lowering``): importing corral never imports it.
"""

from __future__ import annotations

import functools
from typing import Any

from dask._task_spec import Task, TaskRef
from dask.dataframe.dask_expr._shuffle import SimpleShuffle

from corral.shuffle import tasks
from corral.shuffle.plan import ShuffleSpec, barrier_key, transfer_prefix


class CorralShuffle(SimpleShuffle):
    """A peer-to-peer shuffle on a corral cluster."""

    @functools.cached_property
    def _meta(self) -> Any:
        meta = self.frame._meta
        return meta.reset_index(drop=True) if self.ignore_index else meta

    def _layer(self) -> dict[Any, Any]:
        token = self._name.rsplit("-", 1)[-1]
        parts_out = list(self._partitions)
        spec = ShuffleSpec(
            name=token, n_inputs=self.frame.npartitions, npartitions=self.npartitions_out,
            column=self.partitioning_index, ignore_index=self.ignore_index,
            meta=self._meta, parts_out=tuple(parts_out) if self._filtered else None)
        graph: dict[Any, Any] = {}
        sent = []
        for i in range(self.frame.npartitions):
            t = Task((transfer_prefix(token), i), tasks.transfer,
                     TaskRef((self.frame._name, i)), spec, i)
            graph[t.key] = t
            sent.append(t.ref())
        b = Task(barrier_key(token), tasks.barrier, spec, *sent)
        graph[b.key] = b
        for i, part in enumerate(parts_out):
            t = Task((self._name, i), tasks.unpack, b.ref(), spec, part)
            graph[t.key] = t
        return graph
