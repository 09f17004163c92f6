"""The scheduler state machine under random stimuli, against a model of its workers.

Hypothesis drives clients (graphs, releases), workers (joining, dying, starting,
finishing, failing tasks, answering steal requests) and time in random orders; model
workers answer the scheduler's actions as real ones would. After every stimulus the
scheduler's own ``validate()`` holds and every action it emits makes sense for the
world as it is; at the end, once workers are left to finish everything, every key a
client still wants has been reported to it (exactly once where no worker died).
"""

from __future__ import annotations

import pickle
from collections import Counter, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState

ERROR = pickle.dumps(ValueError("boom"))
REPORTS = (ev.ReportKeyInMemory, ev.ReportTaskErred, ev.ReportTaskStarted, ev.ReportCancelled)


@dataclass
class ModelWorker:
    """What a worker holds, as the scheduler's actions and our answers made it."""

    assigned: dict[Hashable, ev.ComputeTask] = field(default_factory=dict)
    started: set[Hashable] = field(default_factory=set)
    memory: set[Hashable] = field(default_factory=set)
    steal_requests: set[Hashable] = field(default_factory=set)


class World:
    """The scheduler, model workers and clients, checked at every step."""

    def __init__(self) -> None:
        self.state = SchedulerState(default_duration=0.5)
        self.workers: dict[str, ModelWorker] = {}
        self.wanted: dict[str, set[Hashable]] = defaultdict(set)  # client → keys it holds
        self.reports: Counter[tuple[type, str, Hashable]] = Counter()
        self.last_report: dict[tuple[str, Hashable], type] = {}
        self.deaths = 0
        self._keys = 0
        self._workers = 0
        self._step = 0
        self.now = 0.0

    # -- stimuli ---------------------------------------------------------------------

    def handle(self, stimulus: ev.Stimulus) -> None:
        actions = self.state.handle(stimulus)
        self.state.validate()
        for action in actions:
            self.check_and_apply(action)

    def sid(self, what: str) -> str:
        self._step += 1
        return f"{what}-{self._step}"

    def submit(self, client: str, deps_per_task: list[list[int]], retries: int) -> None:
        """A graph of new tasks; each may depend on earlier keys, old or new."""
        known = sorted(self.state.tasks, key=str)
        specs: list[ev.TaskSpec] = []
        for picks in deps_per_task:
            key = f"k{self._keys}"
            self._keys += 1
            pool = known + [s.key for s in specs]
            deps = tuple(dict.fromkeys(pool[p % len(pool)] for p in picks)) if pool else ()
            specs.append(ev.TaskSpec(key=key, run_spec=b"f", dependencies=deps,
                                     retries=retries, name="f"))
        wanted = tuple(s.key for s in specs)
        self.wanted[client].update(wanted)
        self.handle(ev.UpdateGraph(stimulus_id=self.sid("graph"), client=client,
                                   tasks=tuple(specs), wanted=wanted, now=self.now))

    def release(self, client: str, pick: int) -> None:
        keys = sorted(self.wanted[client], key=str)
        if keys:
            key = keys[pick % len(keys)]
            self.wanted[client].discard(key)
            self.handle(ev.ClientReleasesKeys(stimulus_id=self.sid("release"), client=client,
                                              keys=(key,)))

    def add_worker(self, nthreads: int) -> None:
        address = f"tcp://w{self._workers}:1"
        self._workers += 1
        self.workers[address] = ModelWorker()
        self.handle(ev.AddWorker(stimulus_id=self.sid("add"), address=address,
                                 nthreads=nthreads, now=self.now))

    def remove_worker(self, pick: int) -> None:
        if self.workers:
            address = sorted(self.workers)[pick % len(self.workers)]
            del self.workers[address]
            self.deaths += 1
            self.handle(ev.RemoveWorker(stimulus_id=self.sid("remove"), address=address,
                                        reason="died"))

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.handle(ev.Tick(stimulus_id=self.sid("tick"), now=self.now))

    def worker_acts(self, pick: int, fail: bool) -> bool:
        """One worker starts or finishes one task, or answers a steal request."""
        choices = [(a, w, k) for a, w in sorted(self.workers.items())
                   for k in sorted(w.steal_requests, key=str)]
        choices += [(a, w, k) for a, w in sorted(self.workers.items())
                    for k in sorted(w.assigned, key=str) if self.inputs_reachable(w.assigned[k])]
        if not choices:
            return False
        address, worker, key = choices[pick % len(choices)]
        if key in worker.steal_requests:
            worker.steal_requests.discard(key)
            released = key in worker.assigned and key not in worker.started
            if released:
                del worker.assigned[key]
            self.handle(ev.StealResponse(stimulus_id=self.sid("steal"), worker=address,
                                         key=key, released=released))
        elif key not in worker.started:
            worker.started.add(key)
            self.handle(ev.TaskStarted(stimulus_id=self.sid("start"), worker=address, key=key))
        elif fail:
            self.drop(worker, key)
            self.handle(ev.TaskErred(stimulus_id=self.sid("erred"), worker=address, key=key,
                                     exception=ERROR, traceback=b"",
                                     exception_text="ValueError: boom"))
        else:
            self.drop(worker, key)
            worker.memory.add(key)
            self.handle(ev.TaskFinished(stimulus_id=self.sid("done"), worker=address, key=key,
                                        nbytes=8, typename="int"))
        return True

    @staticmethod
    def drop(worker: ModelWorker, key: Hashable) -> None:
        worker.assigned.pop(key, None)
        worker.started.discard(key)

    def inputs_reachable(self, compute: ev.ComputeTask) -> bool:
        """Can a worker gather this task's inputs from the holders the scheduler named?"""
        return all(
            any(h in self.workers and dep in self.workers[h].memory for h in holders)
            for dep, holders in compute.who_has.items()
        )

    # -- what every action must satisfy --------------------------------------------------

    def check_and_apply(self, action: ev.Action) -> None:
        if isinstance(action, ev.DropWorker):  # for the server: close a gone worker's stream
            assert action.worker not in self.state.workers, f"dropped but kept: {action}"
            return
        worker_address = getattr(action, "worker", None)
        if worker_address is not None:
            assert worker_address in self.workers, f"action to an unknown worker: {action}"
            assert worker_address in self.state.workers, action
        if isinstance(action, REPORTS):
            assert action.key in self.wanted[action.client], f"unwanted report: {action}"
            self.reports[type(action), action.client, action.key] += 1
            self.last_report[action.client, action.key] = type(action)
        if isinstance(action, ev.ComputeTask):
            worker = self.workers[action.worker]
            assert action.key not in worker.assigned, f"sent twice: {action}"
            for dep, holders in action.who_has.items():
                assert holders, f"{action.key}: no holder of input {dep}"
                assert all(h in self.state.workers for h in holders), action
            worker.assigned[action.key] = action
        elif isinstance(action, ev.FreeKeys):
            worker = self.workers[action.worker]
            for key in action.keys:
                self.drop(worker, key)
                worker.memory.discard(key)
        elif isinstance(action, ev.StealRequest):
            self.workers[action.worker].steal_requests.add(action.key)

    # -- the end ---------------------------------------------------------------------------

    def finish_everything(self) -> None:
        """Let the workers run (and succeed) until nothing is left to do."""
        if not self.workers:
            self.add_worker(nthreads=2)
        for _ in range(10_000):
            if not self.worker_acts(0, fail=False):
                break
        else:
            raise AssertionError("the workers never ran out of work")
        self.state.validate()

    def check_all_reported(self) -> None:
        for client, keys in self.wanted.items():
            for key in keys:
                last = self.last_report.get((client, key))
                state = self.state.task_state(key)
                if last is ev.ReportKeyInMemory:
                    assert state == "memory", (key, state)
                else:
                    assert last is ev.ReportTaskErred, (client, key, state, last)
                    assert state == "erred", (key, state)
                if not self.deaths:  # without lost data, nothing is worth saying twice
                    done = [self.reports[kind, client, key]
                            for kind in (ev.ReportKeyInMemory, ev.ReportTaskErred)]
                    assert sum(done) == 1, (client, key, done)


CLIENTS = ["c1", "c2"]
steps = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(CLIENTS),
              st.lists(st.lists(st.integers(0, 50), max_size=3), min_size=1, max_size=5),
              st.integers(0, 1)),
    st.tuples(st.just("release"), st.sampled_from(CLIENTS), st.integers(0, 50)),
    st.tuples(st.just("add"), st.integers(1, 3)),
    st.tuples(st.just("remove"), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.sampled_from([0.1, 1.0, 10.0])),
    *[st.tuples(st.just("act"), st.integers(0, 50), st.booleans())] * 4,  # mostly work
)


def run(world: World, sequence: list[tuple]) -> None:
    for step in sequence:
        match step:
            case ("submit", client, deps, retries):
                world.submit(client, deps, retries)
            case ("release", client, pick):
                world.release(client, pick)
            case ("add", nthreads):
                world.add_worker(nthreads)
            case ("remove", pick):
                world.remove_worker(pick)
            case ("tick", seconds):
                world.tick(seconds)
            case ("act", pick, fail):
                world.worker_acts(pick, fail)
    world.finish_everything()
    world.check_all_reported()


@pytest.mark.timeout(180)
@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, max_size=40))
def test_random_stimuli_keep_the_invariants_and_every_wanted_key_is_reported(sequence):
    run(World(), sequence)


@pytest.mark.timeout(180)
@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps.filter(lambda step: step[0] != "remove"), max_size=40))
def test_without_deaths_every_wanted_key_is_reported_exactly_once(sequence):
    world = World()
    run(world, sequence)
    assert world.deaths == 0
