"""Adaptive scaling: the pure policy (exact decisions), the scheduler's workload, the
policy driving a simulated cluster through a burst, and one real LocalCluster that
grows with a burst of work and falls back once it is done."""

from __future__ import annotations

import asyncio
import math
import random
import threading

import pytest

from corral import Client, LocalCluster
from corral.deploy import ClusterManager, Job
from corral.deploy.adaptive import AdaptivePolicy, AdaptOptions, Decision
from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState
from corral.scheduler.workload import WorkerLoad, Workload, workload
from corral.simulation import Graph, Simulation
from tests._helpers import wait_until


def worker(name, *, nthreads=1, occupancy=0.0, processing=0, nbytes=0, memory_limit=0,
           retiring=False):
    return WorkerLoad(address=f"tcp://{name}:1", name=name, nthreads=nthreads,
                      memory_limit=memory_limit, nbytes=nbytes, occupancy=occupancy,
                      processing=processing, retiring=retiring)


def load(*workers, unassigned=0, seconds=0.0):
    return Workload(workers=tuple(workers), processing_seconds=sum(w.occupancy for w in workers),
                    unassigned=unassigned, unassigned_seconds=seconds)


def policy(**options):
    return AdaptivePolicy(AdaptOptions(**options), threads_per_worker=2)


# -- how many ---------------------------------------------------------------------------------


def test_no_work_wants_the_minimum():
    assert policy(minimum=2).wanted(load()) == 2
    assert policy().wanted(load(worker("a"))) == 0


def test_tasks_waiting_and_no_worker_want_workers_of_the_specs_threads():
    # 10 s of work, 5 s per thread: 2 threads, one worker of the spec's two threads
    assert policy(target_duration=5).wanted(load(unassigned=10, seconds=10.0)) == 1
    # 60 s: 12 threads, six workers of two
    assert policy(target_duration=5).wanted(load(unassigned=100, seconds=60.0)) == 6
    # a trickle of work still wants one worker to run it
    assert policy(target_duration=5).wanted(load(unassigned=1, seconds=0.001)) == 1


def test_threads_wanted_never_exceed_the_tasks_to_run():
    # two hour-long tasks: two threads would finish no sooner than 100
    busy = worker("a", nthreads=1, occupancy=7200.0, processing=2)
    assert policy(target_duration=5).wanted(load(busy)) == 2


def test_the_current_workers_threads_count_and_the_maximum_caps():
    four = [worker(n, nthreads=4, occupancy=100.0, processing=50) for n in "ab"]
    # 200 s / 5 s = 40 threads; workers of 4 threads: 10 workers, capped at 7
    assert policy(target_duration=5).wanted(load(*four)) == 10
    assert policy(target_duration=5, maximum=7).wanted(load(*four)) == 7


def test_memory_over_the_fraction_asks_for_workers_enough_to_hold_it():
    full = [worker(n, nbytes=900, memory_limit=1000) for n in "ab"]  # 90% of 2000
    # 1800 bytes under 60% of 1000 each: 3 workers
    assert policy().wanted(load(*full)) == math.ceil(1800 / 600)
    assert policy().wanted(load(*[worker(n, nbytes=500, memory_limit=1000) for n in "ab"])) == 0


def test_options_are_checked():
    with pytest.raises(ValueError, match="minimum"):
        AdaptOptions(minimum=3, maximum=2)
    with pytest.raises(ValueError, match="wait_count"):
        AdaptOptions(wait_count=0)


# -- up at once, down slowly ------------------------------------------------------------------


def test_scales_up_at_once_and_forgets_the_idle_counts():
    p = policy(minimum=1, wait_count=2)
    assert p.decide(load(worker("a"), worker("b")), ["a", "b"]) == Decision(1)
    assert p.counts == {"b": 1}
    busy = load(worker("a", occupancy=100.0, processing=40), worker("b"))
    assert p.decide(busy, ["a", "b"]) == Decision(20)  # 100 s / 5 s: 20 threads of one
    assert p.counts == {}


def test_an_idle_worker_is_retired_after_wait_count_decisions_in_a_row():
    p = policy(minimum=1, wait_count=3)
    idle = load(worker("a", nbytes=10), worker("b", nbytes=5))
    first = p.decide(idle, ["a", "b"])
    assert (first.target, first.retire, first.candidates) == (1, (), ("b",))  # least data
    assert p.decide(idle, ["a", "b"]).retire == ()
    assert p.decide(idle, ["a", "b"]).retire == ("b",)
    assert p.counts == {}


def test_work_again_resets_the_count():
    p = policy(minimum=1, wait_count=2)
    idle = load(worker("a", nbytes=10), worker("b"))
    p.decide(idle, ["a", "b"])
    p.decide(load(worker("a", nbytes=10), worker("b", processing=1, occupancy=0.1)), ["a", "b"])
    assert p.counts == {"a": 1}  # b is busy: a is now the one to go, b starts from zero
    assert p.decide(idle, ["a", "b"]).retire == ()
    assert p.counts == {"b": 1}


def test_a_busy_worker_is_never_chosen():
    p = policy(minimum=0, wait_count=1)
    busy = load(worker("a", processing=1, occupancy=0.01), worker("b", processing=1,
                                                                  occupancy=0.01))
    decision = p.decide(busy, ["a", "b"])
    assert decision.target == 1
    assert decision.retire == ()


def test_workers_not_joined_yet_go_first_newest_first():
    p = policy(minimum=1, wait_count=1)
    decision = p.decide(load(worker("a"), worker("b")), ["a", "b", "c", "d"])
    assert decision.retire == ("d", "c", "b")


def test_retiring_and_unmanaged_workers_are_never_candidates():
    p = policy(minimum=0, wait_count=1)
    decision = p.decide(load(worker("a", retiring=True), worker("by-hand")), ["a"])
    assert decision.retire == ()


# -- the scheduler's estimate -----------------------------------------------------------------


def test_workload_counts_tasks_sent_to_workers_and_tasks_waiting_for_one():
    state = SchedulerState(default_duration=0.5)
    specs = tuple(ev.TaskSpec(f"t-{i}", b"x", (), name="t") for i in range(4))
    state.handle(ev.UpdateGraph(stimulus_id="g", client="c", tasks=specs,
                                wanted=tuple(s.key for s in specs)))
    before = workload(state)
    assert (before.workers, before.unassigned, before.unassigned_seconds) == ((), 4, 2.0)
    state.handle(ev.AddWorker(stimulus_id="w", address="tcp://a:1", nthreads=2,
                              memory_limit=1000, name="a"))
    after = workload(state)
    assert after.unassigned == 0
    (a,) = after.workers
    assert (a.name, a.nthreads, a.memory_limit, a.processing, a.occupancy) == (
        "a", 2, 1000, 4, 2.0)
    assert after.seconds == after.processing_seconds == 2.0
    assert after.tasks == 4
    assert Workload.from_wire(after.to_wire()) == after


def test_workload_counts_root_tasks_queued_on_the_scheduler_as_waiting_for_a_thread():
    state = SchedulerState(default_duration=0.5, worker_saturation=1.1)
    state.handle(ev.AddWorker(stimulus_id="w", address="tcp://a:1", nthreads=1,
                              memory_limit=1000, name="a"))
    specs = tuple(ev.TaskSpec(f"t-{i}", b"x", (), name="t") for i in range(12))
    state.handle(ev.UpdateGraph(stimulus_id="g", client="c", tasks=specs,
                                wanted=tuple(s.key for s in specs)))
    load = workload(state)
    (a,) = load.workers
    assert (a.processing, load.unassigned) == (2, 10)  # ceil(1 x 1.1) sent, the rest queued
    assert (load.processing_seconds, load.unassigned_seconds) == (1.0, 5.0)
    assert load.tasks == 12
    # so a burst on one thread asks for a worker per task, not per task sent
    wanted = AdaptivePolicy(AdaptOptions(maximum=3, target_duration=0.01)).wanted(load)
    assert wanted == 3


# -- a simulated burst ------------------------------------------------------------------------


def burst(n: int, duration: float, prefix: str) -> Graph:
    g = Graph()
    for i in range(n):
        g.add(f"{prefix}-{i}", (), prefix, duration, 1000, wanted=True)
    return g


def test_a_simulated_burst_scales_up_to_the_maximum_and_back_without_losing_data():
    sim = Simulation(workers=1, seed=3)
    sim.submit(burst(400, 0.1, "burst"))  # 40 s of work on one thread
    sim.submit(burst(4, 0.1, "later"), at=60.0)  # keeps the run going past the burst
    sim.adapt(AdaptOptions(minimum=1, maximum=8, target_duration=1.0, wait_count=3),
              interval=0.5)
    summary = sim.run()
    assert summary.done == summary.wanted == 404
    assert summary.peak_workers == 8
    assert summary.executed == 404  # nothing recomputed: retired workers' results moved
    assert summary.workers_retired == 7
    assert sim.worker_counts[-1][1] == 1
    up = next(t for t, n in sim.worker_counts if n == 8)
    back = next(t for t, n in sim.worker_counts if t > up and n == 1)
    assert up <= 1.0  # the first decision (at 0.5 s) asks for the maximum
    # 40 s of work on 8 threads, then three idle checks half a second apart: long before
    # the second graph, which the one worker left runs
    assert 5.0 < back < 20.0


def test_workers_added_to_a_burst_queued_on_one_worker_share_it_at_once():
    # bench/adaptive.py's shape, simulated: every task sent to the one worker before the
    # others join. They must take their share by stealing (all of it, in a tick or
    # two, not one task a tick), or adaptive scaling adds workers that barely work.
    def run(workers, adaptive):
        sim = Simulation(workers=workers, nthreads=2, seed=1)
        sim.submit(burst(2000, 0.05, "b"))
        if adaptive:
            sim.adapt(AdaptOptions(minimum=1, maximum=4), interval=1.0)
        summary = sim.run()
        assert summary.done == summary.wanted == 2000
        return sim, summary

    _, fixed_summary = run(4, False)
    grown, summary = run(1, True)
    assert summary.peak_workers == 4
    assert summary.makespan <= 1.2 * fixed_summary.makespan
    assert min(grown.executions.values()) > 0.15 * 2000  # each of the four did its share


# -- a real LocalCluster ----------------------------------------------------------------------

GATE = threading.Event()  # the burst's tasks run until the test opens it


def gated(i: int) -> int:
    GATE.wait(30)
    return i


async def test_an_adaptive_local_cluster_follows_a_burst_and_falls_back():
    GATE.clear()
    async with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                            dashboard_address=None, asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as client:
        assert client.cluster is cluster
        adaptive = cluster.adapt(minimum=1, maximum=3, target_duration=0.01, wait_count=2,
                                 interval=0.02)
        kept = await client.scatter(list(range(20)))  # data on the first worker
        futures = client.map(gated, range(12))
        try:
            await wait_until(lambda: len(cluster.scheduler.state.workers) == 3, 30,
                             "three workers for the burst")
        finally:
            GATE.set()
        assert await client.gather(futures) == list(range(12))
        # The manager logs "stopped" once the retired jobs have closed (they leave
        # cluster.jobs before that): wait for both.
        await wait_until(lambda: len(cluster.scheduler.state.workers) == 1
                         and len(cluster.jobs) == 1
                         and any("stopped" in line for _, line in cluster._events),
                         30, "back to one worker")
        # What the retired workers held moved to the one left before they closed.
        assert await client.gather(futures) == list(range(12))
        assert await client.gather(kept) == list(range(20))
        assert next(d.target for _, d in adaptive.log) == 3
        assert any(d.retire for _, d in adaptive.log)
        await cluster.scale(2)  # by hand: adaptive scaling stops
        assert not adaptive.running
        assert cluster.adaptive is None
        logs = await cluster.get_logs()
        assert any("started" in line for _, line in logs["cluster"])
        assert any("stopped" in line for _, line in logs["cluster"])


def test_scale_by_cores_and_memory_and_status():
    with LocalCluster(n_workers=0, threads_per_worker=2, processes=False,
                      dashboard_address=None, memory_limit="1GiB") as cluster:
        assert cluster.status.value == "running"
        cluster.scale(cores=3)
        assert len(cluster.jobs) == 2
        cluster.scale(memory="3GiB")
        assert len(cluster.jobs) == 3
        cluster.scale(1)
        assert len(cluster.jobs) == 1
        assert cluster.wait_for_workers(1, timeout=10) is None
        with pytest.raises(ValueError, match="negative"):
            cluster.scale(-1)
        assert "workers=1" in repr(cluster)
    assert cluster.status.value == "closed"


def test_the_simulation_is_still_reproducible_when_adaptive():
    def run():
        sim = Simulation(workers=1, seed=5)
        sim.submit(burst(50, random.Random(1).uniform(0.05, 0.2), "b"))
        sim.adapt(AdaptOptions(minimum=1, maximum=4, target_duration=0.5), interval=0.25)
        return sim.run(), sim.worker_counts

    (first, counts), (second, again) = run(), run()
    assert counts == again
    assert (first.makespan, first.peak_workers) == (second.makespan, second.peak_workers)


async def test_a_worker_whose_data_cannot_move_is_kept_and_an_ended_job_is_replaced():
    async with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                            dashboard_address=None, asynchronous=True) as cluster, \
            Client(cluster, asynchronous=True) as client:
        data = await client.scatter([1, 2, 3])
        await cluster._retire(["0"])  # what adaptive scaling does: no other worker
        assert list(cluster.jobs) == ["0"]
        assert await client.gather(data) == [1, 2, 3]
        assert any("kept 0 (their data could not move)" in line
                   for _, line in (await cluster.get_logs())["cluster"])
        await cluster.workers["0"].close()  # ends by itself
        assert cluster.planned == []
        await cluster.scale(1)
        assert list(cluster.jobs) == ["1"]


class SlowJob(Job):
    """A job whose close waits for the test, then takes many turns of the loop."""

    def __init__(self, name, release):
        super().__init__(name)
        self.release = release
        self.closed = False

    async def start(self):
        pass

    async def close(self):
        await self.release.wait()
        for _ in range(100):
            await asyncio.sleep(0)
        self.closed = True


class SlowCluster(ClusterManager):
    def __init__(self, **options):
        self.release = asyncio.Event()
        self.made = []
        self.closed_first = None
        super().__init__(**options)

    def new_job(self, name):
        self.made.append(SlowJob(name, self.release))
        return self.made[-1]

    async def _close_scheduler(self):
        self.closed_first = all(job.closed for job in self.made)
        await super()._close_scheduler()


async def test_close_waits_for_the_jobs_a_cancelled_scale_down_was_closing():
    # What close() does to adaptive scaling caught retiring: the round is cancelled, the
    # jobs it stopped are still closing (shielded); close() waits for them.
    cluster = await SlowCluster(n_workers=2, asynchronous=True)
    shrink = asyncio.ensure_future(cluster._scale(0))
    await wait_until(lambda: not cluster.jobs, 10, "the jobs taken out to close")
    shrink.cancel()
    cluster.release.set()
    await cluster.aclose()
    assert all(job.closed for job in cluster.made)
    assert cluster.closed_first is True
