"""Tasks as the client sends them: one entry of an update-graph message, and its options.

Shared by ``AsyncClient``, ``Executor`` and ``get`` (dask graphs), none of which needs
the others for it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Hashable, Iterable
from typing import Any

from corral import messages as msgs
from corral.comm.addressing import normalize_address


def unique_suffix() -> str:
    """32 hex digits unique among all processes, as ``uuid.uuid4().hex`` but without a
    system call per key: a random half drawn once per process (again in a forked child)
    and a counter. ``os.urandom`` gives up the GIL, and a thread of the client's loop or
    of a scheduler in this process may keep it for a switch interval (5 ms) before the
    caller of ``submit`` gets it back."""
    return f"{_process_random}{next(_counter):016x}"


def _draw_process_random() -> None:
    global _process_random
    _process_random = os.urandom(8).hex()


_process_random = ""
_counter = itertools.count()
_draw_process_random()
os.register_at_fork(after_in_child=_draw_process_random)


def addresses(workers: str | Iterable[str]) -> list[str]:
    """Worker addresses, given as one or several, in canonical form."""
    if isinstance(workers, str):
        workers = [workers]
    return [normalize_address(w) for w in workers]


def worker_specs(workers: str | int | Iterable[str | int]) -> list[str]:
    """Workers as ``workers=`` names them: addresses (put in canonical form), worker
    names and host names (left for the scheduler to match), one or several."""
    if isinstance(workers, (str, int)):
        workers = [workers]
    specs = []
    for w in workers:
        try:
            specs.append(normalize_address(w) if isinstance(w, str) else str(w))
        except (ValueError, TypeError):  # no port: a name or a host
            specs.append(str(w))
    return specs


def task_options(
    workers: str | int | Iterable[str | int] | None,
    allow_other_workers: bool,
    retries: int,
    priority: int,
    resources: dict[str, float] | None,
) -> dict[str, Any]:
    """The placement options every task of one ``submit``/``map``/``get`` call carries."""
    if retries < 0:
        raise ValueError("retries must be >= 0")
    return {
        "workers": None if workers is None else tuple(worker_specs(workers)),
        "allow_other_workers": bool(allow_other_workers),
        "retries": int(retries),
        "priority": int(priority),
        "resources": resources,
    }


def task_message(
    key: Hashable, run_spec: Any, dependencies: list[Hashable], name: str,
    options: dict[str, Any], function: int = -1,
) -> msgs.TaskSpec:
    """One task of an update-graph message; ``options`` from ``task_options``;
    ``function``: the position of its function in the graph's, if not in ``run_spec``."""
    return msgs.TaskSpec(key=key, run_spec=run_spec, dependencies=tuple(dependencies),
                         name=name, function=function, **options)
