"""The scheduler's cost per stimulus grows with the tasks it touches, not with all tasks.

Measured by counting operations, never by timing: lines executed in the scheduler's
modules (``sys.settrace``) plus comparisons between tasks (``TaskState.__eq__``, which a
scan of a list of tasks calls once per element it passes, even in C). What no count
sees (``list.pop(0)`` moving memory) is ruled out by structure: tasks set aside wait
in a deque, and ``validate()`` checks the no-worker index.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from corral.scheduler import events as ev
from corral.scheduler.records import TaskState
from corral.scheduler.state import SchedulerState
from tests.test_scheduler_state import add_worker, finished, graph, spec

SCHEDULER_DIR = str(Path(__import__("corral.scheduler").scheduler.__file__).parent)
A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


def count_ops(monkeypatch, state, stimulus):
    """The actions ``stimulus`` leads to, and the lines run in corral.scheduler and task
    comparisons made while handling it."""
    ops = 0

    def counting_eq(self, other):
        nonlocal ops
        ops += 1
        return self is other

    def local(frame, event, arg):
        nonlocal ops
        if event == "line":
            ops += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(SCHEDULER_DIR) else None

    with monkeypatch.context() as m:
        m.setattr(TaskState, "__eq__", counting_eq)
        sys.settrace(tracer)
        try:
            actions = state.handle(stimulus)
        finally:
            sys.settrace(None)
    return actions, ops


def big_worker(n):
    """A worker A holding ``n`` results whose ``n`` dependents are queued on it, B idle."""
    state = SchedulerState()
    state.handle(add_worker(A))
    specs = [s for i in range(n) for s in (spec(f"r{i}"), spec(f"d{i}", [f"r{i}"]))]
    state.handle(graph("c", *specs, wanted=[f"d{i}" for i in range(n)]))
    state.handle(*[finished(A, f"r{i}") for i in range(n)])
    state.handle(add_worker(B))
    return state


@pytest.mark.timeout(300)
def test_a_big_worker_dying_costs_the_same_per_task_at_any_size(monkeypatch):
    per_task = {}
    for n in (1_000, 10_000):  # 20 000 tasks on the dying worker at the larger size
        state = big_worker(n)
        gone = ev.RemoveWorker(stimulus_id="gone", address=A)
        actions, ops = count_ops(monkeypatch, state, gone)
        per_task[n] = ops / n
        state.validate()
        assert len([a for a in actions if isinstance(a, ev.ComputeTask)]) == n  # roots again
    # Work per task that grew with the number of tasks (a walk of all tasks, or of the
    # tasks set aside, for each one) would make this ratio ~10.
    assert per_task[10_000] <= 1.2 * per_task[1_000], per_task


@pytest.mark.timeout(120)
def test_a_joining_worker_touches_only_the_no_worker_tasks(monkeypatch):
    ops = {}
    for n in (100, 10_000):
        state = big_worker(n)
        state.handle(graph("c2", *[spec(f"gpu{i}", workers=(C,)) for i in range(3)]))
        assert len(state.no_worker) == 3
        join = ev.AddWorker(stimulus_id="join", address=C, nthreads=1)
        actions, ops[n] = count_ops(monkeypatch, state, join)
        assert sorted(a.key for a in actions) == ["gpu0", "gpu1", "gpu2"]
        assert not state.no_worker
        state.validate()
    assert ops[10_000] <= ops[100] * 1.1 + 50, ops  # the same work, whatever else exists


def test_validate_checks_the_no_worker_index():
    state = SchedulerState()
    state.handle(graph("c", spec("x", workers=(C,))))
    assert state.task_state("x") == "no-worker"
    state.validate()
    state.no_worker.clear()
    with pytest.raises(AssertionError, match="no-worker index"):
        state.validate()


def test_tasks_set_aside_are_queued_once_each():
    state = big_worker(3)
    state.handle(ev.RemoveWorker(stimulus_id="gone", address=A))
    assert not state.pending_compute  # all brought back within the stimulus
    state.validate()
    assert sorted(t.key for t in state.workers[B].processing) == ["r0", "r1", "r2"]
