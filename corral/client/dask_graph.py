"""dask's scheduler interface on corral: ``client.get(dsk, keys)``.

dask's own ``convert_legacy_graph`` turns a graph of either generation (tuples, key
aliases and literals, or task-spec nodes) into task-spec nodes, each of which knows its
dependencies and computes its value when called with theirs. Every node needed for the
requested keys becomes one corral task whose run_spec calls the node with ``Dependency``
placeholders for those values, and the whole graph goes to the scheduler in one
update-graph message, each with the options its ``dask.annotate`` annotations give
(``corral.client.annotate``). Only ``get`` imports this module: ``import corral``
never imports dask.
"""

from __future__ import annotations

from collections.abc import Coroutine, Hashable, Iterable, Mapping
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Any, TypeVar

from dask._task_spec import GraphNode, convert_legacy_graph, cull
from dask.core import flatten
from dask.utils import key_split

from corral import runspec
from corral.client import annotate
from corral.client.future import Future
from corral.client.tasks import task_message, task_options

if TYPE_CHECKING:
    from corral.client.interface import ClientCore

K = TypeVar("K", bound=Hashable)


def _run_node(node: GraphNode, values: dict[Hashable, Any]) -> Any:
    return node(values)


_RUN_NODE = runspec.pickle_function(_run_node)  # pickled once for every task


def get(
    client: ClientCore,
    dsk: Any,
    keys: Any,
    *,
    workers: str | Iterable[str] | None = None,
    allow_other_workers: bool = False,
    retries: int = 0,
    priority: int = 0,
    resources: dict[str, float] | None = None,
    **other_schedulers_options: Any,
) -> Coroutine[Any, Any, Any]:
    """Submit the graph now, in the caller's thread; the coroutine returns the results.

    ``keys`` is a key or nested lists of keys; results come in that shape with lists
    as tuples, as dask's own schedulers return them. Keyword arguments meant for
    other schedulers (e.g. ``num_workers``) are ignored, as dask.distributed does.
    """
    given = {"workers": workers, "allow_other_workers": allow_other_workers,
             "retries": retries, "priority": priority, "resources": resources}
    graph = convert_legacy_graph(dsk if isinstance(dsk, Mapping) else dsk.__dask_graph__())
    wanted = list(dict.fromkeys(flatten([keys])))
    for key in wanted:
        if key not in graph:
            raise KeyError(key)
    nodes = _inputs_first(cull(graph, wanted))
    options_of = _Options(given, annotate.by_key(dsk, {key for key, _ in nodes}))
    tasks = [
        task_message(key, _run_spec(node), list(node.dependencies), key_split(key),
                     options_of(key))
        for key, node in nodes
    ]
    futures = {key: Future(key, client) for key in wanted}  # before the reports can arrive
    client.send_graph(tasks, wanted)
    return _results(client, _shaped(keys, futures), futures)


class _Options:
    """Each task's options: its layer's annotations over the call's arguments over the
    annotations around the call (``corral.client.annotate``)."""

    def __init__(self, given: dict[str, Any], by_key: dict[Hashable, dict[str, Any]]) -> None:
        defaults = {"workers": None, "allow_other_workers": False, "retries": 0,
                    "priority": 0, "resources": None}
        self.base = {**defaults, **annotate.current(),
                     **{k: v for k, v in given.items() if v != defaults[k]}}
        self.default = task_options(**self.base)
        self.by_key = by_key
        self._made: dict[str, dict[str, Any]] = {}  # one per distinct set of annotations

    def __call__(self, key: Hashable) -> dict[str, Any]:
        extra = self.by_key.get(key)
        if not extra:
            return self.default
        merged = {**self.base, **extra}
        made = self._made.get(repr(merged))
        if made is None:
            made = self._made[repr(merged)] = task_options(**merged)
        return made


def _run_spec(node: GraphNode) -> Any:
    """Call ``node`` on the worker with the values of its dependencies."""
    return runspec.pack(_RUN_NODE, (node, {d: runspec.Dependency(d) for d in node.dependencies}),
                        {})


def _inputs_first(graph: dict[K, GraphNode]) -> list[tuple[K, GraphNode]]:
    """The nodes with each one's inputs before it: the scheduler then finds every input
    already waiting, and never has to walk a long chain of them (recursively)."""
    order = TopologicalSorter(
        {k: [d for d in n.dependencies if d in graph] for k, n in graph.items()}
    )
    return [(key, graph[key]) for key in order.static_order()]


def _shaped(keys: Any, futures: dict[Hashable, Future]) -> Any:
    if isinstance(keys, list):
        return tuple(_shaped(k, futures) for k in keys)
    return futures[keys]


async def _results(client: ClientCore, shaped: Any, futures: dict[Hashable, Future]) -> Any:
    try:
        return await client.gather(shaped)
    finally:  # intermediate results were never wanted; the outputs are not needed either now
        for future in futures.values():
            future.release()
