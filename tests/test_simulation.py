"""corral.simulation: the real state machines at scales no test cluster reaches, exactly
repeatable. Sizes are chosen for this suite's time budget; bench/scale.py goes further."""

from __future__ import annotations

import random

import pytest

from corral.scheduler.events import TaskSpec
from corral.simulation import GENERATORS, Graph, Simulation, chains, mixed, shuffle, tree
from corral.simulation.__main__ import main as cli_main


def finished_cleanly(sim: Simulation) -> None:
    summary = sim.summary
    assert not summary.stalled
    assert summary.erred == 0
    assert summary.done == summary.wanted > 0
    assert set(sim.reported) == sim.wanted
    sim.scheduler.validate()
    for worker in sim.workers.values():
        worker.state.validate()


def small_run(seed: int) -> Simulation:
    sim = Simulation(20, seed=seed, record=True)
    sim.submit(mixed(600, random.Random(seed)))
    sim.kill(0.3)
    sim.kill(0.6)
    sim.join(0.8)
    sim.run()
    return sim


@pytest.mark.timeout(60)
def test_same_seed_same_stimulus_log_byte_for_byte_and_a_replay_repeats_every_action():
    first, again, other = small_run(1), small_run(1), small_run(2)
    finished_cleanly(first)
    assert first.summary.workers_killed == 2 and first.summary.workers_joined == 1
    log = first.stimulus_log()
    assert log == again.stimulus_log()
    assert log != other.stimulus_log()  # the seed matters: the log is not trivially equal
    assert first.summary == again.summary or (first.summary.makespan == again.summary.makespan)
    recorded = [actions for _, actions in first.log or ()]
    assert first.replay() == recorded
    assert sum(map(len, recorded)) > 1000


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", sorted(GENERATORS))
def test_every_graph_shape_runs_to_completion(shape):
    sim = Simulation(50, seed=3)
    graph = GENERATORS[shape](2000, random.Random(3))
    sim.submit(graph)
    summary = sim.run()
    finished_cleanly(sim)
    assert summary.executed == len(graph)  # no failures: every task ran exactly once
    assert summary.makespan > 0


@pytest.mark.timeout(90)
def test_workers_die_mid_graph_and_every_result_is_still_produced():
    sim = Simulation(100, seed=5)
    graph = mixed(6000, random.Random(5))
    sim.submit(graph)
    for i in range(12):  # a death every 0.15 virtual seconds, a newcomer for every other
        sim.kill(0.15 * (i + 1))
        if i % 2:
            sim.join(0.15 * (i + 1) + 0.5)
    summary = sim.run()
    finished_cleanly(sim)
    assert summary.workers_killed == 12 and summary.workers_joined == 6
    assert summary.executed > len(graph)  # lost results were computed again


def skewed(steal: bool) -> Simulation:
    """Roots' data (100 MB each) all on one worker, then 1-second tasks on each root."""
    graph = Graph()
    for i in range(40):
        graph.tasks.append(TaskSpec(f"root-{i}", b"simulated", workers=("sim://worker-0",),
                                    name="root"))
        graph.durations[f"root-{i}"], graph.nbytes[f"root-{i}"] = 0.001, 100_000_000
        for j in range(10):
            key = f"work-{i}-{j}"
            graph.add(key, (f"root-{i}",), "work", 1.0, 1000, wanted=True)
    sim = Simulation(20, seed=0, **({} if steal else {"max_steals_in_flight": 0}))
    sim.submit(graph)
    sim.run()
    return sim


@pytest.mark.timeout(60)
def test_stealing_spreads_a_skewed_start():
    stolen, stuck = skewed(steal=True), skewed(steal=False)
    finished_cleanly(stolen)
    finished_cleanly(stuck)
    assert stuck.summary.steal_requests == 0
    assert set(stuck.executions) == {"sim://worker-0"}  # without stealing, all stay there
    assert stolen.summary.steal_requests > 0
    assert len(stolen.executions) == 20  # every worker got some
    assert stolen.summary.makespan < stuck.summary.makespan / 4


@pytest.mark.timeout(120)
def test_a_thousand_workers_run_a_large_graph_of_trees_chains_and_shuffles():
    graph = tree(10_000, random.Random(7))
    graph.extend(chains(10_000, random.Random(8)))
    graph.extend(shuffle(10_000, random.Random(9)))
    sim = Simulation(1000, seed=7)
    sim.submit(graph)
    summary = sim.run()
    finished_cleanly(sim)
    assert summary.executed == len(graph)
    assert len(sim.executions) > 900  # the work reached (nearly) every worker


def test_the_command_line_prints_a_summary(capsys):
    cli_main(["--workers", "30", "--tasks", "900", "--graph", "chains", "--kill", "2",
              "--kill-every", "0.2", "--rejoin"])
    out = capsys.readouterr().out
    assert "900 tasks (chains) on 30 workers" in out
    fields = dict(line.split(maxsplit=1) for line in out.splitlines()[1:])
    assert fields["done"] == fields["wanted"] == "90"
    assert fields["workers_killed"] == "2"
