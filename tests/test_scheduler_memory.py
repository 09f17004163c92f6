"""The scheduler and paused workers: exact actions, no sockets."""

from __future__ import annotations

import pytest

from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState

from .test_scheduler_state import A, B, add_worker, brief, graph, spec


def pause(worker, paused=True, sid="p"):
    return ev.WorkerPaused(stimulus_id=sid, worker=worker, paused=paused)


@pytest.fixture
def state():
    s = SchedulerState(default_duration=0.5)
    yield s
    s.validate()


def test_a_paused_worker_gets_no_new_tasks(state):
    state.handle(add_worker(A), add_worker(B))
    assert state.handle(pause(A)) == []
    actions = state.handle(graph("c", spec("x"), spec("y"), spec("z")))
    assert brief(actions) == [("compute", B, "x"), ("compute", B, "y"), ("compute", B, "z")]
    assert state.info()["workers"][A]["paused"] is True


def test_with_every_worker_paused_tasks_wait_and_go_when_one_resumes(state):
    state.handle(add_worker(A))
    state.handle(pause(A))
    assert state.handle(graph("c", spec("x"))) == []
    assert state.tasks["x"].state.value == "no-worker"
    assert brief(state.handle(pause(A, False, "r"))) == [("compute", A, "x")]


def test_a_task_restricted_to_a_paused_worker_queues_there(state):
    state.handle(add_worker(A), add_worker(B), pause(A))
    actions = state.handle(graph("c", spec("x", workers=(A,))))
    assert brief(actions) == [("compute", A, "x")]


def test_queued_tasks_of_a_paused_worker_are_stolen(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("t0"), spec("t1"), spec("t2")))
    state.handle(ev.TaskStarted(stimulus_id="s", worker=A, key="t0"))
    state.handle(pause(A), add_worker(B))
    actions = state.handle(ev.Tick(stimulus_id="tick", now=1.0))
    # Everything queued there, the one that would run last first: A runs nothing new.
    assert brief(actions) == [("steal", A, "t2"), ("steal", A, "t1")]
    actions = state.handle(ev.StealResponse(stimulus_id="r", worker=A, key="t2", released=True))
    assert brief(actions) == [("compute", B, "t2")]


def test_a_loosely_restricted_task_waits_for_its_paused_worker_unless_it_is_gone(state):
    """A shuffle's unpack task is pinned loosely to the worker holding its pieces: it
    must not run elsewhere while that worker is only paused."""
    state.handle(add_worker(A), add_worker(B), pause(A))
    actions = state.handle(graph("c", spec("x", workers=(A,), allow_other_workers=True)))
    assert brief(actions) == [("compute", A, "x")]
    actions = state.handle(ev.RemoveWorker(stimulus_id="gone", address=A))
    assert brief(actions) == [("compute", B, "x"), ("drop", A)]
