"""Getting results: values fetched straight from the workers that hold them, and put
back in the shape the caller asked for.

The scheduler decides what a key missing from its holder means; this module only tells
it (``report_missing``) and waits for its word in the futures' shared state.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any

from corral import runspec
from corral.client.future import FINISHED, FutureState
from corral.core import ConnectionPool
from corral.exceptions import CommError, CorralError
from corral.protocol import loads_pickle

# Times a key may be missing where the scheduler said it was before gather gives up:
# each time the scheduler has moved or recomputed it, so only a client cut off from
# the workers runs out.
FETCH_ROUNDS = 20


async def gather_keys(
    states: dict[Hashable, FutureState],
    pool: ConnectionPool,
    report_missing: Callable[[Hashable, str], None],
    keys: list[Hashable],
    errors: str = "raise",
) -> dict[Hashable, Any]:
    """Fetch values straight from the workers holding them, one request per worker.

    A key missing from its holder is reported to the scheduler, which decides: another
    holder, the key recomputed (the future is pending again meanwhile), or an error
    (``DataLostError`` for data with no lineage). A worker that answers that it cannot
    send a value ends the fetch with its cause: asking again would not help.
    """
    data: dict[Hashable, Any] = {}
    missing = list(dict.fromkeys(keys))
    causes: dict[str, None] = {}  # "worker: why", in the order they happened
    first_error: BaseException | None = None
    for _ in range(FETCH_ROUNDS):
        wanted = {k: s for k in missing if (s := states.get(k)) is not None}
        for state in wanted.values():  # done already, but for keys being recomputed
            await state.wait()
        failed = [s for s in wanted.values() if s.status != FINISHED]
        if failed and errors == "raise":
            raise failed[0].exception  # type: ignore[misc]
        tried = {}
        for k, s in wanted.items():
            if s.status == FINISHED:
                if s.pickled is not None:  # came with the report: nothing to fetch
                    data[k] = loads_pickle(s.pickled)
                else:
                    tried[k] = s.who_has
        by_worker: dict[str, list[Hashable]] = defaultdict(list)
        for key, holders in tried.items():
            if holders:
                by_worker[holders[0]].append(key)
            else:
                causes[f"no worker holds {key!r}"] = None
        results = await asyncio.gather(
            *(pool(w).get_data(keys=ks) for w, ks in by_worker.items()), return_exceptions=True
        )
        for (worker, asked), result in zip(by_worker.items(), results, strict=True):
            if isinstance(result, dict):
                data.update(result)
                if len(result) < len(asked):
                    causes[f"{worker}: does not hold some of them"] = None
            elif isinstance(result, Exception):
                cause = f"{worker}: {type(result).__name__}: {result}"
                if not isinstance(result, CommError):  # it answered
                    raise CorralError(
                        f"could not fetch the data of {asked[:5]}: {cause}"
                    ) from result
                first_error = first_error or result
                causes[cause] = None
            else:
                raise result  # cancelled
        missing = [k for k in tried if k not in data]
        if not missing:
            return data
        for key in missing:
            state = wanted[key]
            report_missing(key, tried[key][0] if tried[key] else "")
            if state.who_has == tried[key]:  # no newer word from the scheduler yet
                state.reset()
    raise CorralError(
        f"could not fetch the data of {missing[:5]} from the workers the scheduler named, "
        f"{FETCH_ROUNDS} times over: {'; '.join(list(causes)[:5])}"
    ) from first_error


def fill(structure: Any, data: dict[Hashable, Any]) -> Any:
    """Put gathered values in place of placeholders; placeholders of failed keys vanish."""
    kind = type(structure)
    if kind is runspec.Dependency:
        return data[structure.key]
    if kind in (list, tuple, set, frozenset):
        return kind(
            fill(v, data) for v in structure
            if type(v) is not runspec.Dependency or v.key in data
        )
    if kind is dict:
        return {
            k: fill(v, data) for k, v in structure.items()
            if type(v) is not runspec.Dependency or v.key in data
        }
    return structure
