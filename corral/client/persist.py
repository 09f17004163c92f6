"""``client.persist`` and ``client.compute`` for dask collections, and ``futures_of``.

``persist`` sends the collections' graphs and rebuilds each collection (dask's own
``__dask_postpersist__``) around a graph of futures, one per output key: the data stays
on the cluster, and a new graph built on the collection depends on those keys
(``dask_graph``). ``compute`` sends each collection's graph with dask's finalizing task
(which concatenates an array's chunks, …) and returns a future of that task. dask is
imported only when they are called (``futures_of`` needs it only for a collection).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from corral.client.defaults import corral_shuffles
from corral.client.future import Future
from corral.client.tasks import task_options

if TYPE_CHECKING:
    from corral.client.interface import ClientCore


def persist(
    client: ClientCore,
    collections: Any,
    *,
    optimize_graph: bool = True,
    **options: Any,
) -> Any:
    """The collections, computing on the cluster, backed by futures that keep the results
    there; one collection for one, a list for a list (or tuple). ``options``: where and
    how the tasks run (``placement``)."""
    from dask._expr import CompositeExpr, _ExprSequence
    from dask.base import collections_to_expr, is_dask_collection
    from dask.core import flatten

    from corral.client import dask_graph

    many = isinstance(collections, (list, tuple, set, frozenset))
    given = list(collections) if many else [collections]
    wanted = [c for c in given if is_dask_collection(c)]
    if not wanted:
        return collections
    expr = collections_to_expr(wanted, optimize_graph)
    exprs = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
    composite = any(isinstance(e, CompositeExpr) for e in exprs)
    with corral_shuffles():  # lowered here: corral's shuffle even if not dask's default
        expr = expr.optimize()
    if composite:
        exprs = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
    keys_of = [list(flatten(k)) for k in expr.__dask_keys__()]
    futures, _ = dask_graph.submit(client, expr, [k for ks in keys_of for k in ks],
                                   placement(**options))
    rebuilt = iter([
        _rebuild(c, e if composite else None, {k: futures[k] for k in keys})
        for c, e, keys in zip(wanted, exprs, keys_of, strict=True)
    ])
    out = [next(rebuilt) if is_dask_collection(c) else c for c in given]
    return type(collections)(out) if many else out[0]


def placement(
    workers: str | Iterable[str] | None = None,
    allow_other_workers: bool = False,
    retries: int = 0,
    priority: int = 0,
    resources: dict[str, float] | None = None,
    **ignored: Any,
) -> dict[str, Any]:
    """The options of ``persist``/``compute`` for every task they send; others that
    dask.distributed takes (``fifo_timeout``, ...) mean nothing here and are ignored."""
    return task_options(workers, allow_other_workers, retries, priority, resources)


def _rebuild(collection: Any, expr: Any, futures: dict[Hashable, Future]) -> Any:
    from dask._expr import CompositeExpr

    if isinstance(expr, CompositeExpr):  # e.g. xarray: dask rebuilds those itself
        from dask.base import _rebuild_composite_collection

        return _rebuild_composite_collection(collection, expr, futures,
                                             cull_to_child_keys=True)
    rebuild, state = collection.__dask_postpersist__()
    return rebuild(futures, *state)


def compute(
    client: ClientCore,
    collections: Any,
    *,
    optimize_graph: bool = True,
    **options: Any,
) -> Any:
    """A future of each collection's final value (an array's chunks concatenated, …):
    one future for one collection, a list for a list (or tuple). Anything that is not
    a dask collection passes through as it is."""
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr, is_dask_collection
    from dask.core import flatten

    from corral.client import dask_graph

    many = isinstance(collections, (list, tuple, set, frozenset))
    given = list(collections) if many else [collections]
    graph: dict[Hashable, Any] = {}
    final: list[Hashable] = []
    exprs = []  # where the dask.annotate annotations are
    for c in given:
        if is_dask_collection(c):
            with corral_shuffles():
                expr = FinalizeCompute(collections_to_expr(c, optimize_graph)).optimize()
            (key,) = flatten(expr.__dask_keys__())
            graph.update(expr.__dask_graph__())
            final.append(key)
            exprs.append(expr)
    futures, _ = dask_graph.submit(client, graph, final, placement(**options), exprs)
    done = iter(final)
    out = [futures[next(done)] if is_dask_collection(c) else c for c in given]
    return type(collections)(out) if many else out[0]


def futures_of(obj: Any) -> list[Future]:
    """The futures in ``obj``: a future, a (nested) list, tuple, set or dict of them, or
    a dask collection whose graph holds them (a persisted one), each once."""
    found: dict[int, Future] = {}
    stack = [obj]
    while stack:  # depth first, in order: pushed in reverse
        x = stack.pop()
        if isinstance(x, Future):
            found.setdefault(id(x), x)
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(reversed(list(x)))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif hasattr(x, "__dask_graph__") and _is_collection(x):
            stack.extend(reversed(list(x.__dask_graph__().values())))
        elif _is_graph_node(x):
            stack.extend(reversed(_node_parts(x)))
    return list(found.values())


def _is_collection(x: Any) -> bool:
    from dask.base import is_dask_collection

    return bool(is_dask_collection(x))


def _is_graph_node(x: Any) -> bool:
    if "dask" not in sys.modules:  # no dask loaded: no dask graph node either
        return False
    from dask._task_spec import GraphNode

    return isinstance(x, GraphNode)


def _node_parts(node: Any) -> list[Any]:
    """What a dask task-spec node holds that may be or contain a future."""
    from dask._task_spec import DataNode, Task

    if isinstance(node, DataNode):
        return [node.value]
    if isinstance(node, Task):
        return [*node.args, *node.kwargs.values()]
    return []
