"""What becomes of tasks beyond the futures that name them: ``fire_and_forget`` (run to
the end even once nobody holds a future) and ``retry`` (run a failed task again)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from corral import messages as msgs
from corral import runspec
from corral.client.future import ERROR, Future
from corral.client.interface import ClientCore

__all__ = ["fire_and_forget", "retry"]


def _futures_in(obj: Any) -> list[Future]:
    found: list[Future] = []
    runspec.replace_in(obj, lambda x: x if isinstance(x, Future) else None, found)
    return found


def fire_and_forget(obj: Any) -> None:
    """Run these futures' tasks (a future, or lists/dicts of them) to the end, even if
    every future for them is released or their client goes away; their inputs are kept
    for them. Their results are freed once they are done, unless someone wants them:
    for tasks run for their side effects."""
    by_client: dict[int, tuple[ClientCore, list[Future]]] = {}
    for future in _futures_in(obj):
        by_client.setdefault(id(future.client), (future.client, []))[1].append(future)
    for client, futures in by_client.values():
        client.check_open()
        keys = tuple(dict.fromkeys(f.key for f in futures))
        client.in_loop(client.send, msgs.FireAndForget(stimulus_id=client.new_id(), keys=keys))


def retry(client: ClientCore, futures: Iterable[Future]) -> None:
    """Run the failed tasks of ``futures`` again, and the failed inputs they need; their
    futures turn pending and then finish (or fail) anew. Others are left alone."""
    client.check_open()
    futures = list(futures)

    def on_loop() -> None:
        failed = [f for f in futures if f._state.status == ERROR]
        for future in failed:
            future._state.reset()
            future._state.exception, future._state.traceback_text = None, ""
        if failed:
            keys = tuple(dict.fromkeys(f.key for f in failed))
            client.send(msgs.RetryKeys(stimulus_id=client.new_id(), keys=keys))

    client.in_loop(on_loop)
