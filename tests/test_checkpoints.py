"""Checkpoints: results with a long lineage get a second copy once workers die
(``corral.scheduler.checkpoints``), on the scheduler, on the worker, and in a simulated
cluster whose workers are killed every 1-2 s."""

from __future__ import annotations

import random

import pytest

from corral import messages as msgs
from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState
from corral.simulation.cluster import Simulation
from corral.simulation.graphs import linked_chains
from corral.worker import events as wev
from corral.worker.state import WorkerState

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


def chain(length):
    """x0 <- x1 <- ... : the client wants only the last."""
    tasks = [ev.TaskSpec(key=f"x{i}", run_spec=b"f", dependencies=(f"x{i - 1}",) if i else ())
             for i in range(length)]
    return ev.UpdateGraph(stimulus_id="graph", client="c", tasks=tuple(tasks),
                          wanted=(f"x{length - 1}",))


def done(worker, key, seconds, nbytes=8):
    return ev.TaskFinished(stimulus_id=f"done-{key}", worker=worker, key=key, nbytes=nbytes,
                           start=0.0, stop=seconds)


def copies(actions):
    """(worker asked, holders named) for each key a worker is asked to copy."""
    return [(a.worker, holders) for a in actions if isinstance(a, ev.AcquireReplicas)
            for holders in a.who_has.values()]


def freed(actions):
    return {(a.worker, k) for a in actions if isinstance(a, ev.FreeKeys) for k in a.keys}


def cluster(**options):
    state = SchedulerState(**options)
    for address in (A, B, C):
        state.handle(ev.AddWorker(stimulus_id="add", address=address, nthreads=1))
    return state


def kill(state, address):
    return state.handle(ev.RemoveWorker(stimulus_id=f"kill-{address}", address=address))


def run_on(state, worker, key, seconds):
    """Finish ``key`` on ``worker`` (wherever the scheduler had put it)."""
    return state.handle(done(worker, key, seconds))


def test_a_healthy_cluster_makes_no_copies():
    state = cluster()
    state.handle(chain(5))
    out = [a for i in range(5) for a in run_on(state, A, f"x{i}", 1.0)]
    assert copies(out) == []
    assert not state.checkpoints.pins
    state.validate()


def armed(length, **options):
    """A cluster whose worker running x0 (of a ``chain(length)``) died and came back."""
    state = cluster(**options)
    state.handle(chain(length))
    where = state.tasks["x0"].processing_on.address
    kill(state, where)
    state.handle(ev.AddWorker(stimulus_id="back", address=where, nthreads=1))
    return state


def test_after_a_death_a_long_lineage_is_copied_and_kept_until_a_later_one_is_safe():
    state = armed(8)  # ratio 10 x (5 ms + 8 B / 100 MB/s): about 50 ms of lineage
    assert state.checkpoints.armed
    assert copies(run_on(state, A, "x0", 0.03)) == []  # 30 ms: not worth a copy
    ((target, holders),) = copies(run_on(state, A, "x1", 0.03))  # 60 ms of lineage
    assert target != A
    assert holders == (A,)
    assert state.tasks["x1"].checkpoint
    out = run_on(state, A, "x2", 0.03) + run_on(state, A, "x3", 0.01)
    assert copies(out) == []  # x2 and x3 count on x1: 40 ms of lineage since
    # x1 is not an input of anything still to run, but results count on it: kept.
    assert (A, "x1") not in freed(out)
    assert state.tasks["x1"].state.value == "memory"
    state.validate()
    # A death of A now loses x3, but x1 has a copy: only x2 and x3 run again.
    state.handle(ev.AddKeys(stimulus_id="copied", worker=target, keys={"x1": 8}))
    out = kill(state, A)
    assert [a.key for a in out if isinstance(a, ev.ComputeTask)] == ["x2"]
    state.validate()
    out = run_on(state, target, "x2", 0.03) + run_on(state, target, "x3", 0.03)
    ((second, holders),) = copies(out)  # x3: 60 ms since x1
    assert second not in (A, target)
    assert holders == (target,)
    out = state.handle(ev.AddKeys(stimulus_id="copied", worker=second, keys={"x3": 8}))
    assert freed(out) == {(target, "x1")}  # x3 is safe: x1 goes
    assert not state.tasks["x1"].checkpoint
    state.validate()


def test_a_checkpoint_that_loses_a_copy_gets_another_and_all_is_freed_at_the_end():
    state = armed(3)
    ((target, _),) = copies(run_on(state, A, "x0", 1.0))
    assert copies(run_on(state, A, "x0", 1.0)) == []  # a duplicate report: no second ask
    state.handle(ev.AddKeys(stimulus_id="copied", worker=target, keys={"x0": 8}))
    out = kill(state, target)
    ((third, holders),) = copies(out)
    assert third not in (A, target)
    assert holders == (A,)
    out = kill(state, third)  # the worker copying it dies too: none is left to ask
    assert copies(out) == []
    state.handle(ev.AddWorker(stimulus_id="join", address=target, nthreads=1))
    run_on(state, A, "x1", 1.0)
    run_on(state, A, "x2", 1.0)
    state.validate()
    state.handle(ev.ClientReleasesKeys(stimulus_id="bye", client="c", keys=("x2",)))
    assert not state.tasks
    assert not state.checkpoints.pins
    assert not state.checkpoints.copying
    state.validate()


def test_checkpoint_ratio_zero_turns_them_off():
    state = armed(3, checkpoint_ratio=0)
    assert not state.checkpoints.armed
    assert copies(run_on(state, A, "x0", 10.0)) == []


def test_a_worker_fetches_and_keeps_a_replica_until_freed():
    ws = WorkerState("tcp://me:1", nthreads=1)
    out = ws.handle(msgs.AcquireReplicas(stimulus_id="r", who_has={"k": (A,)}, nbytes={"k": 8}))
    (gather,) = [i for i in out if isinstance(i, wev.GatherDep)]
    assert (gather.peer, gather.keys) == (A, ("k",))
    out = ws.handle(wev.GatherDepSuccess(stimulus_id="g", peer=A, data={"k": 8}))
    told = [i.msg for i in out if isinstance(i, wev.SendToScheduler)]
    assert told == [msgs.AddKeys(stimulus_id="g", keys={"k": 8})]
    assert ws.tasks["k"].state.value == "memory"  # kept though no task here needs it
    ws.validate()
    out = ws.handle(msgs.AcquireReplicas(stimulus_id="again", who_has={"k": (A,)},
                                         nbytes={"k": 8}))
    assert [i.msg for i in out if isinstance(i, wev.SendToScheduler)] == [
        msgs.AddKeys(stimulus_id="again", keys={"k": 8})]  # held already: said at once
    out = ws.handle(wev.FreeKeys(stimulus_id="f", keys=("k",)))
    assert out == [wev.ReleaseData(stimulus_id="f", keys=("k",))]
    assert "k" not in ws.tasks
    # A copy asked for, then freed before it could be fetched, is forgotten.
    ws.handle(msgs.AcquireReplicas(stimulus_id="r2", who_has={"j": ()}, nbytes={"j": 8}))
    assert ws.tasks["j"].state.value == "missing"
    ws.handle(wev.FreeKeys(stimulus_id="f2", keys=("j",)))
    assert "j" not in ws.tasks
    ws.validate()


def chaos(ratio: float, seed: int, until: float) -> Simulation:
    """The chaos bench's graph (20 chains x 50 steps, 13 ms each) on 3 workers; one is
    killed every 1-2 virtual seconds and a new one joins a second later."""
    rng = random.Random(seed)
    sim = Simulation(3, seed=seed, checkpoint_ratio=ratio)
    sim.submit(linked_chains(1000, random.Random(seed), length=50, duration=0.013))
    t = 0.0
    while t < until:
        t += rng.uniform(1, 2)
        sim.kill(t)
        sim.join(t + 1.0)
    sim.run(until=until)
    return sim


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [0, 1])
def test_long_chains_finish_while_a_worker_dies_every_one_to_two_seconds(seed):
    # 4.4 s of work per worker without faults. Without checkpoints every death sends a
    # third of the chains back to their roots and the graph never finishes.
    without = chaos(0, seed, until=30)
    assert without.summary.done == 0
    assert without.summary.workers_killed >= 15
    with_them = chaos(10, seed, until=30)
    assert with_them.summary.done == 1, with_them.summary
    assert with_them.summary.workers_killed >= 3
    assert with_them.summary.executed < 1.6 * 1014  # little was computed twice
    state = with_them.scheduler
    state.validate()
    state.handle(ev.ClientReleasesKeys(stimulus_id="bye", client="simulated-client",
                                       keys=tuple(with_them.wanted)))
    assert not state.tasks
    assert not state.checkpoints.pins
