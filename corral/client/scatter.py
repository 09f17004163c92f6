"""Putting the client's own data on workers: ``client.scatter``.

Values go straight to the workers chosen here (round robin, or every one of them for a
broadcast); the scheduler is only told where they are and how big, and its report that
they are in memory makes the futures finished.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from corral import messages as msgs
from corral.client.future import Finished, Future
from corral.client.tasks import addresses
from corral.exceptions import CorralError
from corral.sizeof import sizeof

if TYPE_CHECKING:
    from corral.client.client import AsyncClient


def keyed(data: Any) -> dict[Hashable, Any]:
    """``data`` as ``{key: value}``: a dict keeps its keys, other values get fresh ones."""
    if isinstance(data, dict):
        return dict(data)
    values = data if isinstance(data, list | tuple | set | frozenset) else [data]
    return {f"{type(v).__name__}-{uuid.uuid4().hex}": v for v in values}


def place(
    keys: Iterable[Hashable], targets: list[str], broadcast: bool
) -> dict[Hashable, list[str]]:
    """``{key: [workers to hold it]}``: round robin over ``targets``, or all of them."""
    cycle = itertools.cycle(targets)
    return {key: list(targets) if broadcast else [next(cycle)] for key in keys}


def shaped(data: Any, futures: dict[Hashable, Future]) -> Any:
    """The futures in the shape of the scattered ``data``."""
    if isinstance(data, dict):
        return futures
    values = list(futures.values())
    if isinstance(data, list | tuple):
        return type(data)(values)
    if isinstance(data, set | frozenset):
        return values  # futures of a set: a list, as the set's order is not the caller's
    return values[0]


async def scatter(
    client: AsyncClient, data: Any, workers: str | Iterable[str] | None, broadcast: bool
) -> Any:
    items = keyed(data)
    targets = sorted(await client.scheduler.nthreads()) if workers is None \
        else addresses(workers)
    if not targets:
        raise CorralError("no workers to scatter to")
    holders = place(items, targets, broadcast)
    by_worker: dict[str, dict[Hashable, Any]] = defaultdict(dict)
    for key, workers_of_key in holders.items():
        for worker in workers_of_key:
            by_worker[worker][key] = items[key]
    await asyncio.gather(
        *(client.pool(w).update_data(data=d, report=False) for w, d in by_worker.items())
    )
    futures = {key: Future(key, client) for key in items}
    placed = {k: (tuple(holders[k]), sizeof(items[k])) for k in items}
    client.send(msgs.Scatter(stimulus_id=client.new_id(), placed=placed))
    # The scheduler's report that they are in memory also orders later queries after it.
    await Finished(futures.values()).wait_all()
    return shaped(data, futures)
