"""corral shuffles in the dask door: placing them when their graph is submitted, and
running the graph again when one fails (``corral.shuffle`` explains the whole).

A graph built by ``CorralShuffle`` holds transfer, barrier and unpack tasks whose
``ShuffleSpec`` has no owners yet. ``place`` gives the spec a run (a fresh name) and
the workers the scheduler knows now; the transfer and barrier keys get the run in their
name (an attempt's tasks never meet a failed attempt's), the unpack keys stay dask's,
and each unpack task is pinned, loosely, to the owner of its partition.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dask._task_spec import GraphNode, Task, TaskRef

from corral.shuffle import plan, tasks
from corral.shuffle.plan import barrier_key, transfer_prefix

if TYPE_CHECKING:
    from corral.client.interface import ClientCore

logger = logging.getLogger("corral.shuffle")

ATTEMPTS = 5  # runs of a graph whose shuffles keep losing workers, before giving up
_FUNCS = (tasks.transfer, tasks.barrier, tasks.unpack)


def in_graph(dsk: Any) -> bool:
    """Whether graph (or collection) ``dsk`` holds a corral shuffle (a quick scan)."""
    raw = dsk if isinstance(dsk, Mapping) else dsk.__dask_graph__()
    return any(getattr(node, "func", None) is tasks.barrier for node in raw.values())


def workers_now(client: ClientCore) -> list[str]:
    """The scheduler's workers, asked from a thread that may block on the client."""
    if client.runner is None:
        raise ValueError(
            "an asynchronous client places a corral shuffle only in "
            "`await client.get(...)` (e.g. dask.compute(..., scheduler=client.get)); for "
            "persist/compute choose shuffle_method='tasks', or use a synchronous client")
    return list(client.blocking(client.nthreads(), None, "the list of workers"))


def place(graph: dict[Hashable, GraphNode], workers: Iterable[str]
          ) -> tuple[dict[Hashable, GraphNode], dict[Hashable, str]]:
    """``graph`` with its shuffles placed on ``workers`` for a new run, and the worker
    each unpack task is pinned to."""
    run = uuid.uuid4().hex[:8]
    workers = list(workers)
    placed: dict[str, plan.ShuffleSpec] = {}
    out: dict[Hashable, GraphNode] = {}
    pins: dict[Hashable, str] = {}
    for key, node in graph.items():
        func = getattr(node, "func", None)
        if type(node) is not Task or not any(func is f for f in _FUNCS):
            out[key] = node
            continue
        args = node.args
        spec = args[1] if func is not tasks.barrier else args[0]
        new = placed.get(spec.name)
        if new is None:
            new = placed[spec.name] = plan.place(spec, workers, run)
        barrier = barrier_key(spec.name, run)
        if func is tasks.transfer:
            t = Task((transfer_prefix(spec.name, run), args[2]), tasks.transfer, args[0], new,
                     args[2])
        elif func is tasks.barrier:
            t = Task(barrier, tasks.barrier, new,
                     *(TaskRef((transfer_prefix(spec.name, run), i))
                       for i in range(spec.n_inputs)))
        else:
            t = Task(key, tasks.unpack, TaskRef(barrier), new, args[2])
            pins[key] = new.owner_of(args[2])
        out[t.key] = t
    return out, pins
