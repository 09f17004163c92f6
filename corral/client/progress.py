"""``progress(futures)``: a progress bar until futures are done (tqdm, terminal or notebook)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from corral.client.future import Finished, Future

if TYPE_CHECKING:
    from tqdm import tqdm


@functools.cache
def _bar_class() -> type[tqdm[Any]]:
    """tqdm, imported when a first bar is shown (its import costs every client ~80 ms)."""
    from tqdm.auto import tqdm

    class Bar(tqdm):  # type: ignore[type-arg]
        # tqdm's monitor thread tunes bars updated from loops; ours is fed by events and
        # the thread would outlive the call.
        monitor_interval = 0

    return Bar


def progress(futures: Iterable[Future] | Future | Any, *, desc: str = "tasks",
             **tqdm_options: Any) -> Any:
    """Show a bar that fills as ``futures`` (or a persisted dask collection's) finish;
    returns when all are done.

    Erred futures count as finished (the bar shows how many erred) and nothing is
    raised: ask the futures for their results. With an asynchronous client this
    returns a coroutine to await.
    """
    if isinstance(futures, Future):
        futures = [futures]
    elif hasattr(futures, "__dask_graph__"):
        from corral.client.persist import futures_of

        futures = futures_of(futures)
    else:
        futures = list(futures)
    if not futures:
        raise ValueError("progress() needs at least one future")
    futures[0].client.check_open()
    bar = _bar_class()(total=len(futures), desc=desc, unit="task", **tqdm_options)
    coro = _track(futures, bar)
    runner = futures[0].client.runner
    return coro if runner is None else runner.run(coro)


async def _track(futures: list[Future], bar: tqdm[Any]) -> None:
    finished, erred = Finished(futures), 0
    try:
        while batch := await finished.next_batch():
            erred += sum(f.status == "error" for f in batch)
            if erred:
                bar.set_postfix(erred=erred, refresh=False)
            bar.update(len(batch))
    finally:
        bar.close()
