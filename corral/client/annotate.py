"""``dask.annotate(...)`` on collections, as corral task options.

dask keeps annotations on the layers of a collection's high-level graph; a graph that
reaches ``client.get`` is usually an expression over such graphs. Every layer found in
it (before dask's optimisation, which may fuse layers and drop their annotations) gives
its annotations to each of its keys that is still in the graph: a fused task takes the
annotations of the layer whose name it kept. The annotations active around the
``compute`` call itself (``dask.get_annotations()``) apply to every task, below those of
the call's own arguments and of the layers.

The annotations corral honours are those of ``submit``: ``workers`` (addresses, worker
names or host names), ``allow_other_workers``, ``resources``, ``priority`` and
``retries``; dask.distributed's older spellings ``restrictions`` and
``loose_restrictions`` too. Others are ignored, as dask.distributed does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

OPTIONS = ("workers", "allow_other_workers", "resources", "priority", "retries")
ALIASES = {"restrictions": "workers", "loose_restrictions": "allow_other_workers"}


def by_key(dsk: Any, keys: set[Hashable]) -> dict[Hashable, dict[str, Any]]:
    """``{key: {option: value}}`` for the keys of ``keys`` that the layers of ``dsk`` (a
    dask expression or high-level graph, or a list of them) annotate."""
    found: dict[Hashable, dict[str, Any]] = {}
    for layer in _layers(dsk):
        given = {ALIASES.get(k, k): v for k, v in (layer.annotations or {}).items()}
        given = {k: v for k, v in given.items() if k in OPTIONS}
        if not given:
            continue
        for key in layer:
            if key in keys:
                options = found.setdefault(key, {})
                for name, value in given.items():
                    options[name] = value(key) if callable(value) else value
    return found


def current() -> dict[str, Any]:
    """The annotations in force where ``compute`` is called (``with dask.annotate``)."""
    from dask.base import get_annotations

    given = {ALIASES.get(k, k): v for k, v in get_annotations().items()}
    return {k: v for k, v in given.items() if k in OPTIONS}


def _layers(dsk: Any) -> list[Any]:
    from dask._expr import Expr, HLGExpr
    from dask.highlevelgraph import HighLevelGraph

    graphs: list[Any] = []
    if isinstance(dsk, (list, tuple)):
        return [layer for one in dsk for layer in _layers(one)]
    if isinstance(dsk, HighLevelGraph):
        graphs.append(dsk)
    elif isinstance(dsk, Expr):
        for expr in dsk.find_operations(HLGExpr):
            graph = expr.operand("dsk")
            if isinstance(graph, HighLevelGraph):
                graphs.append(graph)
    elif not isinstance(dsk, Mapping) and hasattr(dsk, "__dask_graph__"):
        graph = dsk.__dask_graph__()
        if isinstance(graph, HighLevelGraph):
            graphs.append(graph)
    return [layer for graph in graphs for layer in graph.layers.values()]
