"""What a client does on each report from the scheduler: a key in memory, failed,
started or cancelled, or an answer to a coordination request."""

from __future__ import annotations

import logging
import pickle
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from corral import messages as msgs
from corral.client.future import PENDING, FutureState
from corral.exceptions import InvalidMessage, RemoteError

if TYPE_CHECKING:
    from corral.client.client import AsyncClient

logger = logging.getLogger("corral.client")


def on_report(client: AsyncClient, msg: Any) -> None:
    try:
        report = msgs.read(msgs.TO_CLIENT, msg, client._ids, client=client.id)
    except InvalidMessage as e:
        logger.warning("ignoring a malformed report from the scheduler: %s", e)
        return
    if isinstance(report, msgs.CoordinationReply):  # answers a request, names no key
        client.requests.on_reply(report)
        return
    key = report.key  # type: ignore[attr-defined]  # every report names one
    state = client._states.get(key)
    if state is None:
        return
    if client._start_callbacks and not isinstance(report, msgs.ReportTaskStarted):
        client._start_callbacks.pop(key, None)  # done or cancelled unstarted
    REPORTS[type(report)](client, state, report)


def _task_started(client: AsyncClient, state: FutureState,
                  report: msgs.ReportTaskStarted) -> None:
    on_start = client._start_callbacks.pop(report.key, None)
    if on_start is not None:
        on_start()


def _key_in_memory(client: AsyncClient, state: FutureState,
                   report: msgs.ReportKeyInMemory) -> None:
    state.finish(report.who_has, report.nbytes, report.typename, report.pickled)
    if report.pickled is not None:
        client.inline_results.keep(report.key, state, len(report.pickled))


class InlineResults:
    """Bounds the bytes of results that came with their reports (``FutureState.pickled``)
    that a client keeps: past ``budget`` the oldest are dropped, and their futures fetch
    them from a holder like any other result. Without a bound, 100 000 futures of
    results just under ``scheduler.inline-result-bytes`` would hold 6 GiB here.

    Runs on the client's loop. Released futures' entries are not removed at once: they
    are the oldest, so they go first when the budget is reached."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.total = 0
        self._kept: OrderedDict[Hashable, tuple[FutureState, int]] = OrderedDict()

    def keep(self, key: Hashable, state: FutureState, nbytes: int) -> None:
        previous = self._kept.pop(key, None)
        if previous is not None:
            self.total -= previous[1]
        self._kept[key] = (state, nbytes)
        self.total += nbytes
        while self.total > self.budget and self._kept:
            _, (oldest, size) = self._kept.popitem(last=False)
            self.total -= size
            oldest.pickled = None  # a reader that already took the bytes still has them


def _task_erred(client: AsyncClient, state: FutureState, report: msgs.ReportTaskErred) -> None:
    exception = load_exception(report.exception, report.exception_text,
                               report.traceback_text)
    if report.traceback_text:
        exception.add_note(f"Remote traceback:\n{report.traceback_text.rstrip()}")
    state.fail(exception, report.traceback_text)


def _cancelled(client: AsyncClient, state: FutureState, report: msgs.ReportCancelled) -> None:
    if state.status == PENDING:
        state.cancel(report.reason)
    else:  # finished: the scheduler says so of those only when it restarts
        state.lose(report.reason)


def load_exception(blob: bytes | None, text: str, traceback_text: str) -> BaseException:
    """The pickled exception ``blob``, or one rebuilt from its text if it cannot load."""
    if blob:
        try:
            exception = pickle.loads(blob)
            if isinstance(exception, BaseException):
                return exception
        except Exception:
            pass
    type_name, _, message = (text or "unknown error").partition(": ")
    return RemoteError(type_name, message, traceback_text)


# What the client does on each report from the scheduler.
REPORTS: dict[type[msgs.ToClient], Callable[[AsyncClient, FutureState, Any], None]] = {
    msgs.ReportTaskStarted: _task_started,
    msgs.ReportKeyInMemory: _key_in_memory,
    msgs.ReportTaskErred: _task_erred,
    msgs.ReportCancelled: _cancelled,
}
