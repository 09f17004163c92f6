"""dask's scheduler interface on corral: ``client.get(dsk, keys)``.

dask's own ``convert_legacy_graph`` turns a graph of either generation (tuples, key
aliases and literals, or task-spec nodes) into task-spec nodes, each of which knows its
dependencies and computes its value when called with theirs. Every node needed for the
requested keys becomes one corral task whose run_spec calls the node with ``Dependency``
placeholders for those values, and the whole graph goes to the scheduler in one
update-graph message, each task with the options its ``dask.annotate`` annotations
give (``corral.client.annotate``). Only ``get`` imports this module: ``import corral``
never imports dask.

A corral ``Future`` in a graph is a reference to its key, which the cluster already
holds: dask's converter turns a future that is a graph value into an alias of its key
(a persisted collection's graph is ``{key: future}``: an alias of itself, i.e. no task
to send), and a future among a task's arguments (``delayed(f)(future)``) becomes a
``TaskRef`` here. Either way the key is a dependency, never a pickled future.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Hashable, Iterable, Mapping
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Any, TypeVar

from dask._task_spec import (
    Alias,
    DataNode,
    GraphNode,
    Task,
    TaskRef,
    _execute_subgraph,
    convert_legacy_graph,
    cull,
    parse_input,
)
from dask.core import flatten
from dask.utils import key_split

from corral import runspec
from corral.client import annotate, dask_locks, dask_shuffle
from corral.client.future import Future
from corral.client.tasks import task_message, task_options
from corral.exceptions import ShuffleFailed

if TYPE_CHECKING:
    from corral.client.interface import ClientCore

K = TypeVar("K", bound=Hashable)
logger = logging.getLogger("corral.shuffle")


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
    options = task_options(workers, allow_other_workers, retries, priority, resources)
    if dask_shuffle.in_graph(dsk):  # placed once the worker list is in, maybe run again
        return _shuffling(client, dsk, keys, options)
    futures, held = submit(client, dsk, list(flatten([keys])), options)
    return _results(client, _shaped(keys, futures), futures, held)


async def _shuffling(client: ClientCore, dsk: Any, keys: Any, options: dict[str, Any]) -> Any:
    """``get`` of a graph with corral shuffles: a run that fails (``ShuffleFailed``: a
    worker was lost) is released and the graph sent again, placed on the workers left."""
    suspects: set[str] = set()
    for attempt in range(1, dask_shuffle.ATTEMPTS + 1):
        workers = [w for w in await client.nthreads() if w not in suspects]
        futures, held = submit(client, dsk, list(flatten([keys])), options,
                               workers=workers or None)
        try:
            return await _results(client, _shaped(keys, futures), futures, held)
        except ShuffleFailed as e:
            if attempt == dask_shuffle.ATTEMPTS:
                raise
            logger.warning("%s; running the graph again (attempt %d of %d)", e, attempt + 1,
                           dask_shuffle.ATTEMPTS)
            if e.worker:
                suspects.add(e.worker)
    raise AssertionError("unreachable")


def submit(
    client: ClientCore, dsk: Any, keys: list[Hashable], options: dict[str, Any],
    annotated: Any = None, workers: list[str] | None = None,
) -> tuple[dict[Hashable, Future], list[Future]]:
    """Send the part of graph ``dsk`` that ``keys`` need, in one message; a future for
    each of ``keys``, and the futures the graph held (keep them until the graph is sent:
    their keys must not be released before its tasks depend on them). Each task's
    options are ``options`` under its ``dask.annotate`` annotations, read from
    ``annotated`` (expressions or graphs) or else from ``dsk``. corral shuffles in it
    are placed on ``workers`` (by default those the scheduler knows now)."""
    raw = dsk if isinstance(dsk, Mapping) else dsk.__dask_graph__()
    held = [v for v in raw.values() if isinstance(v, Future)]
    graph = {k: _with_refs(node, held) for k, node in convert_legacy_graph(raw).items()}
    pins: dict[Hashable, str] = {}
    if dask_shuffle.in_graph(graph):
        graph, pins = dask_shuffle.place(graph, workers or dask_shuffle.workers_now(client))
    for future in held:
        if future.client is not client:
            raise ValueError(f"the graph holds future {future.key!r} of another client; "
                             "use futures only with the client that made them")
    # The keys futures stand for: on the cluster already, nothing to send. (dask's
    # optimizer may have culled them from the graph, an alias of itself being no task.)
    existing = {k for k, node in graph.items() if isinstance(node, Alias) and node.target == k}
    wanted: list[Any] = list(dict.fromkeys(keys))  # dask's keys: str, bytes, int, tuples
    for key in wanted:
        if key not in graph:
            if not client.holds(key):
                raise KeyError(key)
            existing.add(key)
    nodes = [(k, node) for k, node in _inputs_first(cull(graph, wanted)) if k not in existing]
    by_key = annotate.by_key(dsk if annotated is None else annotated, {k for k, _ in nodes})
    for key, owner in pins.items():  # an unpack task runs where its pieces are
        by_key[key] = {**by_key.get(key, {}), "workers": [owner], "allow_other_workers": True}
    options_of = _Options(options, by_key)
    tasks = [
        task_message(key, _run_spec(node), list(node.dependencies), key_split(key),
                     options_of(key))
        for key, node in nodes
    ]
    futures = {key: Future(key, client) for key in wanted}  # before the reports can arrive
    if tasks:
        client.send_graph(tasks, [key for key in wanted if key not in existing])
    return futures, held


def _with_refs(node: GraphNode, found: list[Future]) -> GraphNode:
    """``node``, with each future among a task's arguments (or an inline task's, or in
    a list, tuple, set or dict among them) a reference to its key, and a data node
    holding a future (``delayed(future)``) an alias of its key; the futures are
    appended to ``found``."""
    if type(node) is DataNode and isinstance(node.value, Future):
        found.append(node.value)
        return Alias(node.key, node.value.key)  # type: ignore[arg-type]
    if type(node) is not Task:
        return node
    if node.func is _execute_subgraph:  # fused by dask's optimizer: refs become inputs
        return _subgraph_with_refs(node, found)
    args = tuple(_ref(a, found) for a in node.args)
    kwargs = {k: _ref(v, found) for k, v in node.kwargs.items()}
    if all(a is b for a, b in zip(args, node.args, strict=True)) and all(
        kwargs[k] is v for k, v in node.kwargs.items()
    ):
        return node
    return Task(node.key, node.func, *args, _data_producer=node.data_producer, **kwargs)


def _subgraph_with_refs(node: Task, found: list[Future]) -> Task:
    inner, outkey, inkeys, *deps = node.args
    inside: list[Future] = []
    new_inner = {k: _with_refs(v, inside) for k, v in inner.items()}
    if not inside:
        return node
    found.extend(inside)
    new_keys: list[Any] = [k for k in dict.fromkeys(f.key for f in inside) if k not in inkeys]
    return Task(node.key, _execute_subgraph, new_inner, outkey, (*inkeys, *new_keys),
                *deps, *(TaskRef(k) for k in new_keys))


def _ref(arg: Any, found: list[Future]) -> Any:
    if isinstance(arg, Future):
        found.append(arg)
        return TaskRef(arg.key)  # type: ignore[arg-type]
    if isinstance(arg, GraphNode):
        return _with_refs(arg, found)
    inside: list[Future] = []
    runspec.replace_in(arg, lambda x: x if isinstance(x, Future) else None, inside)
    if not inside:
        return arg
    found.extend(inside)
    return parse_input(arg)  # dask's own: a List/Dict/... node, each future an alias


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
    """Call ``node`` on the worker with the values of its dependencies; dask's
    in-process locks in it become cluster-wide ones (``dask_locks``)."""
    args = (node, {d: runspec.Dependency(d) for d in node.dependencies})
    return dask_locks.cluster_wide(runspec.pack(_RUN_NODE, args, {}), (_RUN_NODE, args, {}))


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


async def _results(
    client: ClientCore, shaped: Any, futures: dict[Hashable, Future], held: list[Future]
) -> Any:
    try:
        return await client.gather(shaped)
    finally:  # intermediate results were never wanted; the outputs are not needed either now
        for future in futures.values():
            future.release()
