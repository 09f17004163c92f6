"""``secede()`` and ``rejoin()``: a running task gives its thread slot back, and asks for
one again.

The task's thread leaves the worker's pool (a new thread takes its place) and tells the
state machine (``Secede``), which starts the next ready task and tells the scheduler.
``rejoin()`` asks the state machine for a slot (``Rejoin``) and waits until it grants
one (``Resume``): on a busy worker that is when a running task finishes or secedes.
The thread itself ends with its task; it never goes back to taking work.
"""

from __future__ import annotations

import threading

from corral.worker import events as ev
from corral.worker import runner
from corral.worker.context import current_task
from corral.worker.server import Worker

__all__ = ["rejoin", "secede"]


def _running_task(what: str) -> tuple[Worker, object]:
    task = current_task()
    if task is None or task[1] is None:
        raise ValueError(f"{what}() is for code running in a corral task")
    return task


def secede() -> None:
    """Leave the worker's thread slots: the next ready task starts, and this one is no
    longer load for the scheduler. Use it before waiting for tasks this task launched."""
    worker, key = _running_task("secede")
    runner.leave_pool()
    worker.from_thread(ev.Secede, key)


def rejoin() -> None:
    """After ``secede()``: wait for a free thread slot and take it (no-op otherwise)."""
    worker, key = _running_task("rejoin")
    if runner.in_pool():
        return  # never seceded
    event = threading.Event()
    worker.resume_events[key] = event
    if worker.from_thread(ev.Rejoin, key):
        event.wait()
