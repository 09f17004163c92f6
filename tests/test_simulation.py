"""corral.simulation: the real state machines at scales no test cluster reaches, exactly
repeatable. Sizes are chosen for this suite's time budget; bench/scale.py goes further."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert first.summary.workers_killed == 2
    assert first.summary.workers_joined == 1
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
    # No failures: every task ran once, bar a few that ran where they were stolen to too.
    assert len(graph) <= summary.executed <= len(graph) + summary.steal_requests
    assert summary.makespan > 0


@pytest.mark.timeout(90)
def test_workers_die_mid_graph_and_every_result_is_still_produced():
    sim = Simulation(100, seed=5)
    graph = mixed(4000, random.Random(5))
    sim.submit(graph)
    for i in range(12):  # a death every 0.15 virtual seconds, a newcomer for every other
        sim.kill(0.15 * (i + 1))
        if i % 2:
            sim.join(0.15 * (i + 1) + 0.5)
    summary = sim.run()
    finished_cleanly(sim)
    assert summary.workers_killed == 12
    assert summary.workers_joined == 6
    assert summary.executed > len(graph)  # lost results were computed again


def skewed(steal: bool) -> Simulation:
    """A skewed start: the roots and every task on their data (1-second tasks) are queued
    on the only worker there is; 19 more join half a second later."""
    graph = Graph()
    for i in range(40):
        graph.add(f"root-{i}", (), "root", 0.001, 1_000_000)
        for j in range(10):
            graph.add(f"work-{i}-{j}", (f"root-{i}",), "work", 1.0, 1000, wanted=True)
    sim = Simulation(1, seed=0, **({} if steal else {"max_steals_in_flight": 0}))
    sim.submit(graph)
    for _ in range(19):
        sim.join(0.5)
    sim.run()
    return sim


@pytest.mark.timeout(60)
def test_stealing_spreads_a_skewed_start():
    stolen, stuck = skewed(steal=True), skewed(steal=False)
    finished_cleanly(stolen)
    finished_cleanly(stuck)
    assert stuck.summary.steal_requests == 0
    assert stuck.executions["sim://worker-0"] > 100  # what was queued there ran there
    assert stolen.summary.steal_requests > 0
    assert len(stolen.executions) == 20
    assert max(stolen.executions.values()) < 40  # 440 tasks, 20 workers: about 22 each
    assert stolen.summary.makespan < stuck.summary.makespan / 3


@pytest.mark.timeout(120)
def test_a_thousand_workers_run_a_large_graph_of_trees_chains_and_shuffles():
    # 10^4 tasks (~15 s of CPU here); bench/scale.py runs 10^5 and 10^6 on 1 000 workers.
    graph = tree(4_000, random.Random(7))
    graph.extend(chains(3_000, random.Random(8)))
    graph.extend(shuffle(3_000, random.Random(9)))
    sim = Simulation(1000, seed=7)
    sim.submit(graph)
    summary = sim.run()
    finished_cleanly(sim)
    assert len(graph) <= summary.executed <= len(graph) + summary.steal_requests
    assert len(sim.executions) > 900  # the work reached (nearly) every worker


def test_the_command_line_prints_a_summary(capsys):
    cli_main(["--workers", "30", "--tasks", "900", "--graph", "chains", "--kill", "2",
              "--kill-every", "0.2", "--rejoin"])
    out = capsys.readouterr().out
    assert "900 tasks (chains) on 30 workers" in out
    fields = dict(line.split(maxsplit=1) for line in out.splitlines()[1:])
    assert fields["done"] == fields["wanted"] == "90"
    assert fields["workers_killed"] == "2"


DOC = Path(__file__).resolve().parent.parent / "docs" / "simulation.md"
SNIPPETS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.S | re.M)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code", SNIPPETS, ids=[f"block-{i + 1}" for i in range(len(SNIPPETS))])
def test_the_docs_examples_run_and_print_what_they_say(code, tmp_path):
    printed = re.findall(r"^\s*print\(.*\)\s*#\s*(.+?)\s*$", code, re.M)
    assert printed
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == printed
