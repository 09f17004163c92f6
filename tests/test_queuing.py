"""Root-task queuing in the scheduler state machine: exact actions, no sockets."""

from __future__ import annotations

import math

import pytest

from corral.scheduler import events as ev
from corral.scheduler.queuing import parse_saturation
from corral.scheduler.state import SchedulerState

from .test_scheduler_state import A, B, C, add_worker, brief, computes, finished, graph, spec

INF = math.inf


def pause(worker, paused=True):
    return ev.WorkerPaused(stimulus_id="p", worker=worker, paused=paused)


def processing(state):
    return {a: sorted(t.key for t in w.processing) for a, w in state.workers.items()}


def n_processing(state):
    return sum(len(w.processing) for w in state.workers.values())


@pytest.fixture
def state():
    s = SchedulerState(default_duration=0.5, worker_saturation=1.1)
    yield s
    s.validate()


def roots(n, prefix="r"):
    return [spec(f"{prefix}{i:04d}") for i in range(n)]


def test_a_thousand_roots_never_have_more_than_the_saturation_processing(state):
    state.handle(add_worker(A), add_worker(B))
    tasks = roots(1000)
    total = spec("total", deps=[t.key for t in tasks])
    sent = computes(state.handle(graph("c", *tasks, total, wanted=["total"])))
    assert len(sent) == 4  # 2 workers x ceil(1 thread x 1.1)
    assert state.info()["tasks"]["queued"] == 996
    order = [key for _, key in sent]
    for step in range(1000):
        assert n_processing(state) <= 2 * math.ceil(1.1)
        # the worker finishes the oldest task it was sent
        worker, key = next((w, k) for w, k in sent if k not in state.tasks
                           or state.tasks[k].state.value == "processing")
        sent.remove((worker, key))
        new = computes(state.handle(finished(worker, key)))
        assert all(w == worker for w, _ in new) or key == "r0999"
        sent += new
        order += [k for _, k in new]
        if step % 100 == 0:
            state.validate()
    assert order == [t.key for t in tasks] + ["total"]  # roots in priority order, then the sum
    assert state.info()["tasks"].get("queued", 0) == 0


def test_inf_sends_every_ready_task_at_once_as_before():
    old, new = SchedulerState(), SchedulerState(worker_saturation=INF)
    stimuli = [add_worker(A), add_worker(B), graph("c", *roots(1000))]
    assert old.handle(*stimuli) == new.handle(*stimuli)
    assert len(computes(new.handle())) == 0
    assert sum(map(len, processing(new).values())) == 1000
    assert not new.queue
    assert "queued" not in new.info()["tasks"]
    new.validate()


def test_queued_tasks_leave_in_priority_order_whatever_order_they_came_in(state):
    state.handle(add_worker(A))
    # user priority first (higher first), then the graph's depth-first order: the inputs
    # of one pair before those of the next
    pairs = [spec("p0", deps=["a0000", "a0003"]), spec("p1", deps=["a0001", "a0002"])]
    specs = [spec("low", priority=-1), *roots(4, "a"), *pairs, spec("high", priority=5)]
    sent = computes(state.handle(graph("c", *specs)))
    assert sent == [(A, "high"), (A, "a0000")]
    order = []
    while sent:
        worker, key = sent.pop(0)
        order.append(key)
        sent += computes(state.handle(finished(worker, key)))
    queued = [k for k in order if not k.startswith("p")]  # pairs are sent once ready
    assert queued == ["high", "a0000", "a0003", "a0001", "a0002", "low"]


def test_a_wide_group_sharing_one_input_is_root_ish_and_its_reductions_are_not(state):
    state.handle(add_worker(A), add_worker(B))
    loads = [spec(f"load{i}", deps=["seed"]) for i in range(10)]  # > 2 x 2 threads
    pairs = [spec(f"pair{i}", deps=[f"load{2 * i}", f"load{2 * i + 1}"]) for i in range(5)]
    state.handle(graph("c", spec("seed"), *loads, *pairs, wanted=[p.key for p in pairs]))
    sent = computes(state.handle(finished(computes_of(state)[0][0], "seed")))
    assert len(sent) == 4
    assert state.info()["tasks"]["queued"] == 6
    for worker, key in sent[:2]:
        state.handle(finished(worker, key))
    # load0 and load1 are done: their pair goes at once, however full the workers are
    assert state.tasks["pair0"].state.value == "processing"


def computes_of(state):
    return [(w.address, t.key) for w in state.workers.values() for t in w.processing]


def test_released_and_cancelled_queued_tasks_leave_the_queue(state):
    state.handle(add_worker(A))
    state.handle(graph("c", *roots(10)))
    assert len(state.queue) == 8
    actions = state.handle(ev.CancelKeys(stimulus_id="x", client="c", keys=("r0005",)))
    assert brief(actions) == [("cancelled", "c", "r0005")]
    state.handle(ev.ClientReleasesKeys(stimulus_id="y", client="c",
                                       keys=tuple(f"r{i:04d}" for i in range(6, 10))))
    assert sorted(t.key for t in state.queue) == ["r0002", "r0003", "r0004"]
    assert "r0007" not in state.tasks  # forgotten
    sent = [k for _, k in computes(state.handle(finished(A, "r0000")))]
    assert sent == ["r0002"]


def test_a_dead_workers_root_tasks_go_back_to_the_queue_first_in_line(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c", *roots(10)))
    assert processing(state) == {A: ["r0000", "r0001"], B: ["r0002", "r0003"]}
    actions = state.handle(ev.RemoveWorker(stimulus_id="gone", address=A))
    assert computes(actions) == []  # B is full: they wait
    assert {"r0000", "r0001"} <= {t.key for t in state.queue}
    assert computes(state.handle(finished(B, "r0002"))) == [(B, "r0000")]


def test_a_new_worker_takes_queued_tasks_at_once(state):
    state.handle(add_worker(A))
    state.handle(graph("c", *roots(10)))
    actions = state.handle(add_worker(C, nthreads=2))
    assert computes(actions) == [(C, "r0002"), (C, "r0003"), (C, "r0004")]  # ceil(2 x 1.1)


def test_a_paused_worker_gets_no_queued_tasks_until_it_resumes(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c", *roots(10)))
    state.handle(pause(A))
    assert computes(state.handle(finished(A, "r0000"))) == []
    assert computes(state.handle(finished(B, "r0002"))) == [(B, "r0004")]
    # r0001 still holds one of its two slots
    assert computes(state.handle(pause(A, False))) == [(A, "r0005")]


def test_with_no_worker_running_root_tasks_are_no_worker_then_queue(state):
    state.handle(graph("c", *roots(3)))
    assert state.info()["tasks"] == {"no-worker": 3}
    assert computes(state.handle(add_worker(A))) == [(A, "r0000"), (A, "r0001")]
    assert state.info()["tasks"] == {"processing": 2, "queued": 1}


def test_stealing_never_sees_queued_tasks_and_stolen_roots_requeue(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c", *roots(3)))
    assert processing(state) == {A: ["r0000", "r0001"], B: ["r0002"]}
    state.handle(finished(B, "r0002"))  # B idle, A has two: one may be stolen
    actions = state.handle(ev.Tick(stimulus_id="tick", now=1.0))
    assert brief(actions) == [("steal", A, "r0001")]
    actions = state.handle(ev.StealResponse(stimulus_id="r", worker=A, key="r0001",
                                            released=True))
    assert computes(actions) == [(B, "r0001")]


def test_a_seceded_task_frees_its_slot(state):
    state.handle(add_worker(A))
    state.handle(graph("c", *roots(4)))
    state.handle(ev.TaskStarted(stimulus_id="s", worker=A, key="r0000"))
    actions = state.handle(ev.TaskSeceded(stimulus_id="s", worker=A, key="r0000"))
    assert computes(actions) == [(A, "r0002")]


@pytest.mark.parametrize("value", [0, -1, "abc", True, None, math.nan, "0"])
def test_bad_saturations_are_refused_with_the_setting_named(value):
    with pytest.raises(ValueError, match="worker-saturation must be a number > 0"):
        parse_saturation(value)


@pytest.mark.parametrize(("value", "expected"), [("inf", INF), (2, 2.0), ("1.5", 1.5)])
def test_saturations_as_config_files_and_the_environment_give_them(value, expected):
    assert parse_saturation(value) == expected


def test_tasks_sharing_a_large_input_follow_it_rather_than_queue(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(ev.ScatterData(stimulus_id="s", client="c", placed={"big": (B, 30 << 20)}))
    actions = state.handle(graph("c", *[spec(f"use{i}", deps=["big"]) for i in range(10)]))
    assert len(computes(actions)) == 10  # placed as before: by input and load
    assert not state.queue


def run_queue(state, worker, n):
    """Finish the oldest task on ``worker`` ``n`` times, each after 1 ms with a result of
    8 bytes: how many tasks it holds after each."""
    held = []
    for _ in range(n):
        key = min(t.key for t in state.workers[worker].processing)
        state.handle(finished(worker, key, nbytes=8, start=0.0, stop=0.001))
        held.append(len(state.workers[worker].processing))
    return held


def test_short_tasks_with_small_results_fill_a_round_trip_per_thread(state):
    state.handle(add_worker(A, nthreads=2))
    state.handle(graph("c", *[spec(f"r{i:04d}", name="noop") for i in range(100)]))
    assert len(state.workers[A].processing) == 3  # ceil(2 x 1.1): durations unknown yet
    # once seen to take 1 ms with 8-byte results: SHORT_WORK (20 ms) of them per thread,
    # topped up once half of the 37 beyond the saturation (18) are free, in one batch
    assert run_queue(state, A, 20) == [40, *range(39, 22, -1), 40, 39]
    assert len(state.queue) == 100 - 3 - 38 - 18


@pytest.mark.parametrize(("nbytes", "seconds"), [(1 << 20, 0.001), (8, 0.05)])
def test_tasks_with_large_results_or_long_ones_stay_at_the_saturation(state, nbytes, seconds):
    state.handle(add_worker(A))
    state.handle(graph("c", *[spec(f"r{i:04d}", name="f") for i in range(10)]))
    for key in ("r0000", "r0001", "r0002"):  # a result of a MiB, or 50 ms: one per thread
        state.handle(finished(A, key, nbytes=nbytes, start=0.0, stop=seconds))
        assert len(state.workers[A].processing) == 2  # ceil(1 x 1.1)


def test_once_tasks_are_seen_to_be_short_every_worker_takes_more(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c", *[spec(f"r{i:04d}", name="noop") for i in range(100)]))
    state.handle(finished(A, "r0000", nbytes=8, start=0.0, stop=0.001))  # B finished none
    assert [len(w.processing) for w in state.workers.values()] == [20, 20]
    state.validate()
