"""Time as a stimulus: worker heartbeats and client grace decided by the state machine,
from the ``now`` carried in stimuli; each test sets the clock itself."""

from __future__ import annotations

from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState
from tests.test_scheduler_state import finished, graph, spec

A, B = "tcp://a:1", "tcp://b:1"


def join(address, now):
    return ev.AddWorker(stimulus_id=f"join-{address}", address=address, nthreads=1, now=now)


def tick(now):
    return ev.Tick(stimulus_id=f"tick-{now}", now=now)


def heartbeat(address, now):
    return ev.WorkerHeartbeat(stimulus_id=f"hb-{now}", worker=address, now=now)


def test_a_silent_worker_is_removed_at_the_first_tick_past_its_ttl_and_not_before():
    state = SchedulerState(worker_ttl=10.0)
    state.handle(join(B, now=100.0))
    state.handle(graph("c", spec("x")))
    state.handle(join(A, now=108.0))
    assert state.handle(tick(110.0)) == []  # B silent for exactly the ttl: still alive
    assert state.handle(heartbeat(A, now=112.0)) == []
    actions = state.handle(tick(110.5))
    assert actions == [
        ev.ComputeTask(stimulus_id="tick-110.5", worker=A, key="x", run_spec=b"spec-x",
                       who_has={}, nbytes={}, priority=(0, 1, 0),
                       inline_result=64 * 1024),  # client c waits for it
        ev.DropWorker(stimulus_id="tick-110.5", worker=B, reason="no heartbeat for 10.0 s"),
    ]
    assert list(state.workers) == [A]
    assert state.handle(tick(122.0)) == []  # A's heartbeat at 112 keeps it until 122
    assert state.handle(tick(122.5))[-1] == ev.DropWorker(
        stimulus_id="tick-122.5", worker=A, reason="no heartbeat for 10.0 s")
    assert state.workers == {}
    assert state.task_state("x") == "no-worker"
    state.validate()


def test_heartbeats_never_turn_the_clock_back_and_strangers_are_ignored():
    state = SchedulerState(worker_ttl=10.0)
    state.handle(join(A, now=100.0), heartbeat(A, now=105.0), heartbeat(A, now=101.0),
                 heartbeat(B, now=105.0))
    assert state.handle(tick(115.0)) == []
    assert state.handle(tick(115.5)) == [
        ev.DropWorker(stimulus_id="tick-115.5", worker=A, reason="no heartbeat for 10.0 s")]
    state.validate()


def test_without_a_ttl_workers_never_expire():
    state = SchedulerState(worker_ttl=None)
    state.handle(join(A, now=0.0))
    assert state.handle(tick(1e9)) == []
    assert list(state.workers) == [A]


def computed(state, client="c"):
    state.handle(join(A, now=0.0))
    state.handle(graph(client, spec("x")))
    state.handle(finished(A, "x"))
    assert state.task_state("x") == "memory"


def test_a_disconnected_clients_keys_are_released_when_its_grace_runs_out():
    state = SchedulerState(client_grace=5.0)
    computed(state)
    state.handle(ev.ClientDisconnected(stimulus_id="lost", client="c", now=50.0))
    assert state.handle(tick(54.9)) == []
    assert state.task_state("x") == "memory"
    assert state.handle(tick(55.0)) == [
        ev.FreeKeys(stimulus_id="tick-55.0", worker=A, keys=("x",)),
        ev.DropClient(stimulus_id="tick-55.0", client="c", reason="not back within 5.0 s"),
    ]
    assert state.task_state("x") is None
    assert state.handle(tick(100.0)) == []  # expired once
    state.validate()


def test_a_client_back_within_its_grace_keeps_its_keys():
    state = SchedulerState(client_grace=5.0)
    computed(state)
    state.handle(ev.ClientDisconnected(stimulus_id="lost", client="c", now=50.0))
    assert state.handle(ev.ClientConnected(stimulus_id="back", client="c", now=52.0)) == []
    assert state.handle(tick(1000.0)) == []
    assert state.task_state("x") == "memory"
    # Dropping off again starts a fresh grace, from the new time.
    state.handle(ev.ClientDisconnected(stimulus_id="lost2", client="c", now=1000.0))
    assert state.handle(tick(1004.0)) == []
    assert [type(a) for a in state.handle(tick(1005.0))] == [ev.FreeKeys, ev.DropClient]
    state.validate()


def test_a_client_that_says_goodbye_is_removed_at_once():
    state = SchedulerState(client_grace=5.0)
    computed(state)
    assert state.handle(ev.RemoveClient(stimulus_id="bye", client="c")) == [
        ev.FreeKeys(stimulus_id="bye", worker=A, keys=("x",)),
        ev.DropClient(stimulus_id="bye", client="c", reason="closed"),
    ]
    assert state.task_state("x") is None
    state.validate()
