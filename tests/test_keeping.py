"""``fire_and_forget`` and ``retry`` in the scheduler state machine (no sockets)."""

from __future__ import annotations

import pickle

from corral.scheduler import events as ev
from tests.test_scheduler_state import A, add_worker, brief, finished, graph, spec
from tests.test_scheduler_state import state as state  # the fixture, validated after each test


def erred(key):
    return ev.TaskErred(stimulus_id=f"e-{key}", worker=A, key=key,
                        exception=pickle.dumps(ValueError("v")), traceback=b"",
                        exception_text="ValueError: v", traceback_text="")


def test_fire_and_forget_keeps_a_released_task_and_its_input_until_it_is_done(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("x"), spec("y", ["x"]), wanted=["y"]))
    assert state.handle(ev.FireAndForget(stimulus_id="f", client="c", keys=("y",))) == []
    assert state.handle(ev.ClientReleasesKeys(stimulus_id="r", client="c", keys=("y",))) == []
    # x finishes, y runs; nobody is told (the pseudo-client hears nothing)
    assert brief(state.handle(finished(A, "x"))) == [("record", A, "x"), ("compute", A, "y")]
    # done: y's result and its input are freed, since nobody wants them (one message)
    assert brief(state.handle(finished(A, "y"))) == [("record", A, "y"), ("free", A, ("y", "x"))]
    assert state.tasks == {}
    assert "fire-and-forget" not in state.client_keys or not state.client_keys["fire-and-forget"]


def test_without_fire_and_forget_releasing_cancels(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("x")))
    assert brief(state.handle(ev.ClientReleasesKeys(stimulus_id="r", client="c",
                                                    keys=("x",)))) == [("free", A, ("x",))]


def test_a_fire_and_forget_task_that_errs_is_let_go(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("x")))
    state.handle(ev.FireAndForget(stimulus_id="f", client="c", keys=("x",)))
    state.handle(ev.ClientReleasesKeys(stimulus_id="r", client="c", keys=("x",)))
    assert brief(state.handle(erred("x"))) == [
        ("record", A, "x"), ("free", A, ("x",)), ("notice", "task-erred", "x")]
    assert state.tasks == {}


def test_fire_and_forget_on_a_finished_key_changes_nothing(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("x")))
    state.handle(finished(A, "x"))
    assert state.handle(ev.FireAndForget(stimulus_id="f", client="c", keys=("x", "nope"))) == []
    assert "x" not in state.client_keys.get("fire-and-forget", {})


def test_retry_recomputes_the_erred_input_behind_an_erred_key(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("x"), spec("y", ["x"]), wanted=["y"]))
    assert brief(state.handle(erred("x")))[-1] == ("erred", "c", "y")
    actions = state.handle(ev.RetryKeys(stimulus_id="again", client="c", keys=("y",)))
    assert brief(actions) == [("compute", A, "x")]
    assert state.task_state("y") == "waiting"
    assert brief(state.handle(finished(A, "x"))) == [("record", A, "x"), ("compute", A, "y")]
    assert brief(state.handle(finished(A, "y"))) == [
        ("record", A, "y"), ("memory", "c", "y"), ("free", A, ("x",))]


def test_retry_leaves_keys_that_did_not_fail_alone(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("x")))
    assert state.handle(ev.RetryKeys(stimulus_id="again", client="c", keys=("x", "nope"))) == []
    assert state.task_state("x") == "processing"
