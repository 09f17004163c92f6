"""The stimulus log: a recorded run replays into a fresh state machine exactly, and a
key's story joins the stimuli that named or moved it with the moves they caused."""

from __future__ import annotations

import random

import pytest

from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState
from corral.scheduler.stimulus_log import StoryStep, load, record, replay
from tests.test_scheduler_state import add_worker, finished, graph, spec


def random_run(seed: int, steps: int = 1500) -> tuple[SchedulerState, list[ev.Action]]:
    """A scheduler driven through graphs, results, errors, deaths, joins, steals, ticks,
    heartbeats and clients leaving, chosen by ``seed``; every action it made."""
    rng = random.Random(seed)
    state = SchedulerState(worker_ttl=30.0, client_grace=5.0, max_steals_in_flight=5)
    actions: list[ev.Action] = []
    running: dict[tuple[str, object], None] = {}  # (worker, key) told to compute
    steals: list[ev.StealRequest] = []
    workers = [f"tcp://w{i}:1" for i in range(4)]
    now, n = 0.0, 0

    def feed(*stimuli: ev.Stimulus) -> None:
        for action in state.handle(*stimuli):
            actions.append(action)
            if isinstance(action, ev.ComputeTask):
                running[action.worker, action.key] = None
            elif isinstance(action, ev.StealRequest):
                steals.append(action)

    feed(*[ev.AddWorker(stimulus_id=f"join-{w}", address=w, nthreads=rng.choice((1, 2)),
                        now=now) for w in workers])
    for step in range(steps):
        roll = rng.random()
        now += rng.random()
        if roll < 0.08 or not running:
            n += 1
            client = rng.choice(("alice", "bob"))
            size = rng.randint(1, 12)
            specs = []
            for i in range(size):
                deps = rng.sample([s.key for s in specs], k=min(len(specs), rng.randint(0, 2)))
                specs.append(spec(f"g{n}-{i}", deps, name=f"f{i % 3}", retries=rng.randint(0, 1)))
            feed(graph(client, *specs, wanted=[s.key for s in specs[-2:]]))
        elif roll < 0.70:
            worker, key = rng.choice(sorted(running, key=str))
            del running[worker, key]
            if rng.random() < 0.05:
                feed(ev.TaskErred(stimulus_id=f"err-{step}", worker=worker, key=key,
                                  exception=b"e", traceback=b"", start=now - 1, stop=now))
            else:
                feed(finished(worker, key, nbytes=rng.randint(1, 10**6), start=now - 0.5,
                              stop=now))
        elif roll < 0.78 and steals:
            steal = steals.pop(rng.randrange(len(steals)))
            feed(ev.StealResponse(stimulus_id=f"steal-{step}", worker=steal.worker,
                                  key=steal.key, released=rng.random() < 0.7))
        elif roll < 0.82:
            if state.workers:  # (all may have gone silent and expired on a tick)
                gone = rng.choice(sorted(state.workers))
                feed(ev.RemoveWorker(stimulus_id=f"die-{step}", address=gone, reason="chaos"))
            fresh = f"tcp://fresh{step}:1"
            feed(ev.AddWorker(stimulus_id=f"join-{step}", address=fresh, nthreads=2, now=now))
        elif roll < 0.88:
            for w in sorted(state.workers):
                if rng.random() < 0.9:
                    feed(ev.WorkerHeartbeat(stimulus_id=f"hb-{step}", worker=w, now=now))
        elif roll < 0.93:
            feed(ev.Tick(stimulus_id=f"tick-{step}", now=now))
        elif roll < 0.96:
            client = rng.choice(("alice", "bob"))
            keys = sorted((ts.key for ts in state.client_keys.get(client, ())), key=str)
            if keys:
                feed(ev.ClientReleasesKeys(stimulus_id=f"rel-{step}", client=client,
                                           keys=tuple(rng.sample(keys, k=len(keys) // 2))))
        elif roll < 0.98:
            feed(ev.ClientDisconnected(stimulus_id=f"off-{step}", client="bob", now=now))
        else:
            feed(ev.ClientConnected(stimulus_id=f"on-{step}", client="bob", now=now))
        if step % 100 == 0:
            state.validate()
    return state, actions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_recorded_run_replays_into_the_same_actions(seed):
    state, actions = random_run(seed)
    assert len(actions) > 1000  # the run did a lot
    kinds = {type(a) for a in actions}
    assert {ev.ComputeTask, ev.FreeKeys, ev.ReportKeyInMemory, ev.DropWorker} <= kinds
    recording = record(state)
    assert load(recording).complete
    again, replayed = replay(recording)
    assert replayed == actions
    again.validate()
    assert {k: ts.state for k, ts in again.tasks.items()} == {
        k: ts.state for k, ts in state.tasks.items()}
    assert again.info() == state.info()


def test_a_recording_says_when_its_oldest_stimuli_rolled_off():
    state = SchedulerState(stimulus_log_length=3)
    state.handle(*[add_worker(f"tcp://w{i}:1") for i in range(5)])
    assert len(state.stimuli) == 3
    assert state.stimuli_handled == 5
    assert not load(record(state)).complete


def test_a_story_joins_stimuli_and_the_transitions_they_caused():
    state = SchedulerState()
    join = add_worker("tcp://a:1")
    submit = graph("c", spec("x"), spec("y", ["x"]), wanted=["y"])
    done = finished("tcp://a:1", "x")
    other = graph("c", spec("z"))
    state.handle(join, submit, done, other)
    assert state.story("x") == [
        StoryStep("graph", submit, (("released", "waiting"), ("waiting", "processing"))),
        StoryStep("done-x", done, (("processing", "memory"),)),
    ]
    # "y" was named by the graph and moved by it, and moved again by "x" finishing.
    assert [(step.stimulus_id, step.transitions) for step in state.story("y")] == [
        ("graph", (("released", "waiting"),)),
        ("done-x", (("waiting", "processing"),)),
    ]


def test_a_story_keeps_transitions_whose_stimulus_rolled_off():
    state = SchedulerState(stimulus_log_length=1)
    state.handle(add_worker("tcp://a:1"), graph("c", spec("x")))
    state.handle(ev.ClientReleasesKeys(stimulus_id="rel", client="c", keys=("x",)))
    steps = state.story("x")
    assert [s.stimulus_id for s in steps] == ["graph", "rel"]
    assert steps[0].stimulus is None  # rolled off the stimulus log; its moves remain
    assert steps[1].transitions == (("processing", "released"),)



def test_a_graph_is_logged_packed_and_unpacks_equal():
    """The log keeps a graph in columns that share the records' keys and run specs (not
    the specs as they came), and gives back an equal graph for stories and replays."""
    state = SchedulerState()
    submit = ev.UpdateGraph(stimulus_id="g", client="c", tasks=(
        spec("x", name="f", function=0), spec("y", ["x"], name="f", function=0),
        spec("z", ["x", "y"], priority=3, retries=1, name="g")),
        wanted=("y", "z"), functions=(b"fn-bytes",), report_start=True, now=5.0)
    state.handle(add_worker("tcp://a:1"), submit)
    logged = state.stimuli[-1]
    assert not isinstance(logged, ev.UpdateGraph)
    assert all(key is state.tasks[key].key for key in logged.keys)
    assert load(record(state)).stimuli[-1] == submit
    assert state.story("z")[0].stimulus == submit


def test_the_tasks_of_a_map_share_one_copy_of_their_function():
    state = SchedulerState()
    fn = b"pickled-function"
    specs = [spec(f"t{i}", name="f", function=0) for i in range(3)]
    actions = state.handle(add_worker("tcp://a:1", nthreads=3), ev.UpdateGraph(
        stimulus_id="g", client="c", tasks=tuple(specs), wanted=("t0",), functions=(fn,)))
    sent = [a for a in actions if isinstance(a, ev.ComputeTask)]
    assert [a.key for a in sent] == ["t0", "t1", "t2"]
    assert all(a.function is fn for a in sent)
    assert all(state.tasks[f"t{i}"].function is fn for i in range(3))
