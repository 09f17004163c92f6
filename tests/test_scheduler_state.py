"""The scheduler state machine, driven without sockets or clocks."""

from __future__ import annotations

import dataclasses
import pickle
import time

import pytest

from corral.exceptions import DataLostError, KilledWorker, UnknownStimulus
from corral.scheduler import events as ev
from corral.scheduler.dispatch import HANDLERS
from corral.scheduler.state import SchedulerState

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


def spec(key, deps=(), **kw):
    return ev.TaskSpec(key=key, run_spec=b"spec-" + key.encode(), dependencies=tuple(deps), **kw)


def graph(client, *specs, wanted=None):
    keys = tuple(s.key for s in specs) if wanted is None else tuple(wanted)
    return ev.UpdateGraph(stimulus_id="graph", client=client, tasks=specs, wanted=keys)


def add_worker(address, nthreads=1):
    return ev.AddWorker(stimulus_id="add", address=address, nthreads=nthreads)


def finished(worker, key, nbytes=8, start=0.0, stop=0.0):
    return ev.TaskFinished(stimulus_id=f"done-{key}", worker=worker, key=key, nbytes=nbytes,
                           typename="int", start=start, stop=stop)


def computes(actions):
    return [(a.worker, a.key) for a in actions if isinstance(a, ev.ComputeTask)]


_BRIEF = {ev.ComputeTask: "compute", ev.FreeKeys: "free", ev.StealRequest: "steal",
          ev.ReportKeyInMemory: "memory", ev.ReportTaskErred: "erred",
          ev.ReportTaskStarted: "started", ev.ReportCancelled: "cancelled"}


def brief(actions):
    """Every action, in order, as (kind, worker or client, key or keys): exact lists to
    compare without spelling out run specs and priorities. Unknown kinds stay whole."""
    out = []
    for a in actions:
        if isinstance(a, ev.Notice):
            out.append(("notice", a.event, a.key))
        elif isinstance(a, ev.RecordTaskRun):  # a bar of the task stream
            out.append(("record", a.worker, a.key))
        elif isinstance(a, ev.DropWorker):
            out.append(("drop", a.worker))
        elif type(a) in _BRIEF:
            who = a.worker if hasattr(a, "worker") else a.client
            out.append((_BRIEF[type(a)], who, a.keys if isinstance(a, ev.FreeKeys) else a.key))
        else:
            out.append(a)
    return out


def of_type(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


@pytest.fixture
def state():
    s = SchedulerState(default_duration=0.5)
    yield s
    s.validate()


def test_one_task_on_one_worker(state):
    state.handle(add_worker(A))
    actions = state.handle(graph("c1", spec("x")))
    assert actions == [
        ev.ComputeTask(stimulus_id="graph", worker=A, key="x", run_spec=b"spec-x", who_has={},
                       nbytes={}, priority=(0, 1, 0), resources=None,
                       inline_result=64 * 1024)  # a client waits for it
    ]
    actions = state.handle(finished(A, "x"))
    assert actions == [
        ev.RecordTaskRun(stimulus_id="done-x", worker=A, key="x", name="", start=0.0, stop=0.0,
                         nbytes=8),
        ev.ReportKeyInMemory(stimulus_id="done-x", client="c1", key="x", who_has=(A,), nbytes=8,
                             typename="int"),
    ]
    assert state.task_state("x") == "memory"
    actions = state.handle(ev.ClientReleasesKeys(stimulus_id="rel", client="c1", keys=("x",)))
    assert actions == [ev.FreeKeys(stimulus_id="rel", worker=A, keys=("x",))]
    assert state.task_state("x") is None


def test_dependent_runs_where_its_input_lives(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c", spec("x"), wanted=["x"]))
    where = state.tasks["x"].processing_on.address
    state.handle(finished(where, "x", nbytes=100_000_000))
    actions = state.handle(graph("c", spec("y", ["x"])))
    assert brief(actions) == [("compute", where, "y")]


def test_busy_holder_loses_to_an_idle_worker(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(ev.ScatterData(stimulus_id="s", client="c", placed={"big": (A, 1_000_000)}))
    busy = [spec(f"busy{i}", workers=(A,)) for i in range(50)]
    state.handle(graph("c", *busy))
    actions = state.handle(graph("c", spec("y", ["big"])))
    assert brief(actions) == [("compute", B, "y")]  # 50 x 0.5 s queued on A > 10 ms to move 1 MB


def test_large_input_pins_the_task_despite_an_idle_worker(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(ev.ScatterData(stimulus_id="s", client="c", placed={"big": (A, 10**9)}))
    state.handle(graph("c", spec("busy", workers=(A,))))
    actions = state.handle(graph("c", spec("y", ["big"])))
    assert brief(actions) == [("compute", A, "y")]  # 10 s to move 1 GB > 0.5 s of waiting


def test_chain_across_workers_and_release_of_intermediates(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c", spec("a"), spec("b", ["a"]), wanted=["b"]))
    wa = state.tasks["a"].processing_on.address
    actions = state.handle(finished(wa, "a"))
    assert brief(actions) == [("record", wa, "a"), ("compute", wa, "b")]
    actions = state.handle(finished(wa, "b"))
    assert brief(actions) == [("record", wa, "b"), ("memory", "c", "b"), ("free", wa, ("a",))]
    assert state.task_state("a") == "released"  # kept as lineage of b


def test_restrictions_and_no_worker(state):
    state.handle(add_worker(A))
    actions = state.handle(graph("c", spec("x", workers=(B,))))
    assert actions == []
    assert state.task_state("x") == "no-worker"
    actions = state.handle(add_worker(B))
    assert brief(actions) == [("compute", B, "x")]
    actions = state.handle(graph("c", spec("y", workers=(C,), allow_other_workers=True)))
    assert brief(actions) == [("compute", A, "y")]  # C is not there: A is free


def test_retries_then_error_propagates_to_dependents_and_clients(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("x", retries=1), spec("y", ["x"])))
    erred = ev.TaskErred(
        stimulus_id="e", worker=A, key="x", exception=pickle.dumps(ValueError("v")),
        traceback=b"", exception_text="ValueError: v", traceback_text="tb",
    )
    actions = state.handle(erred)
    # Retried: the failed attempt is freed on the worker, then sent again.
    assert brief(actions) == [("record", A, "x"), ("free", A, ("x",)), ("compute", A, "x")]
    actions = state.handle(erred)
    assert brief(actions) == [("record", A, "x"), ("free", A, ("x",)),
                              ("notice", "task-erred", "x"), ("erred", "c", "x"),
                              ("erred", "c", "y")]
    assert pickle.loads(actions[3].exception).args == ("v",)
    assert state.task_state("y") == "erred"


def test_unknown_dependency_is_an_error_for_the_client(state):
    state.handle(add_worker(A))
    actions = state.handle(graph("c", spec("y", ["nope"])))
    assert brief(actions) == [("notice", "task-erred", "y"), ("erred", "c", "y")]
    assert "nope" in actions[1].exception_text


def test_pure_keys_are_shared_and_refcounted_across_clients(state):
    state.handle(add_worker(A))
    assert brief(state.handle(graph("c1", spec("x")))) == [("compute", A, "x")]
    assert state.handle(graph("c2", spec("x"))) == []
    actions = state.handle(ev.ClientReleasesKeys(stimulus_id="r", client="c1", keys=("x",)))
    assert actions == []
    assert brief(state.handle(finished(A, "x"))) == [("record", A, "x"), ("memory", "c2", "x")]


def test_cancel_reports_and_frees(state):
    state.handle(add_worker(A))
    state.handle(graph("c", spec("x")))
    actions = state.handle(ev.CancelKeys(stimulus_id="k", client="c", keys=("x",)))
    assert sorted(brief(actions)) == [("cancelled", "c", "x"), ("free", A, ("x",))]
    assert state.task_state("x") is None
    assert state.handle(finished(A, "x")) == [ev.FreeKeys(stimulus_id="done-x", worker=A,
                                                          keys=("x",))]


def test_removed_worker_reschedules_and_recomputes_lineage(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c", spec("a", workers=(A,)), spec("b", ["a"], workers=(B,)),
                       wanted=["b"]))
    state.handle(finished(A, "a"))
    assert state.task_state("b") == "processing"
    actions = state.handle(ev.RemoveWorker(stimulus_id="gone", address=A))
    # "a" is restricted to the dead worker: nothing to compute. b's input died with A:
    # b is taken back from B and waits for a's recomputation.
    assert brief(actions) == [("notice", "key-lost", "a"), ("free", B, ("b",)), ("drop", A)]
    assert state.task_state("a") == "no-worker"
    assert state.task_state("b") == "waiting"
    actions = state.handle(add_worker(A))
    assert brief(actions) == [("compute", A, "a")]
    assert brief(state.handle(finished(A, "a"))) == [("record", A, "a"), ("compute", B, "b")]


def test_lost_scattered_data_errs_clearly(state):
    state.handle(add_worker(A))
    state.handle(ev.ScatterData(stimulus_id="s", client="c", placed={"d": (A, 10)}))
    actions = state.handle(ev.RemoveWorker(stimulus_id="gone", address=A))
    (report,) = of_type(actions, ev.ReportTaskErred)
    assert isinstance(pickle.loads(report.exception), DataLostError)


def test_killed_worker_after_allowed_failures(state):
    for i in range(3):
        state.handle(add_worker(f"tcp://w{i}:1"))
    state.handle(graph("c", spec("crash")))
    state.handle(graph("c", spec("queued")))
    for _ in range(3):
        where = state.tasks["crash"].processing_on.address
        state.handle(ev.TaskStarted(stimulus_id="started", worker=where, key="crash"))
        actions = state.handle(ev.RemoveWorker(stimulus_id="died", address=where))
        state.validate()
    (report,) = of_type(actions, ev.ReportTaskErred)
    assert isinstance(pickle.loads(report.exception), KilledWorker)
    assert state.tasks["queued"].suspicious == 0  # never started, so never blamed


def test_a_worker_dead_before_its_start_report_blames_what_it_would_have_run(state):
    """A start report may wait for the worker's next write, and a task that kills its
    worker at once never sends it: the tasks it would have started first by priority,
    one per thread, are the suspects; the rest of its queue is not."""
    for i in range(3):
        state.handle(add_worker(f"tcp://w{i}:1"))
    state.handle(graph("c", spec("crash")))
    for _ in range(3):
        where = state.tasks["crash"].processing_on
        later = f"later-{where.address}"  # queued behind it there
        state.handle(graph("c", spec(later, workers=(where.address,))))
        assert state.tasks[later].processing_on is where
        actions = state.handle(ev.RemoveWorker(stimulus_id="died", address=where.address))
        state.validate()
        assert state.tasks[later].suspicious == 0
    (report,) = of_type(actions, ev.ReportTaskErred)
    assert report.key == "crash"
    assert isinstance(pickle.loads(report.exception), KilledWorker)


def test_missing_data_reschedules_the_dependent(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(ev.ScatterData(stimulus_id="s", client="c",
                                placed={"d": (A, 10)}))
    state.handle(ev.AddKeys(stimulus_id="k", worker=B, keys={"d": 10}))
    state.handle(graph("c", spec("y", ["d"], workers=(C,), allow_other_workers=False)))
    state.handle(add_worker(C))
    actions = state.handle(ev.MissingData(stimulus_id="m", worker=C, key="d", errant_worker=A))
    (compute,) = of_type(actions, ev.ComputeTask)
    assert compute.who_has == {"d": (B,)}
    assert ev.FreeKeys(stimulus_id="m", worker=C, keys=("y",)) in actions


def test_idle_worker_steals_queued_work(state):
    state.handle(add_worker(A))
    state.handle(graph("c", *[spec(f"t{i}") for i in range(10)]))
    state.handle(add_worker(B))
    actions = state.handle(ev.Tick(stimulus_id="tick", now=1.0))
    steals = of_type(actions, ev.StealRequest)
    # The ones that would run last, until both have half the work: in one tick.
    assert [(s.worker, s.key) for s in steals] == [(A, f"t{i}") for i in (9, 8, 7, 6, 5)]
    # Asked for already: the next tick asks for no more.
    assert of_type(state.handle(ev.Tick(stimulus_id="tick2", now=1.1)), ev.StealRequest) == []
    actions = state.handle(ev.StealResponse(stimulus_id="r", worker=A, key="t9", released=True))
    assert brief(actions) == [("compute", B, "t9")]


def test_idle_workers_take_turns_until_the_load_is_even(state):
    state.handle(add_worker(A))
    state.handle(graph("c", *[spec(f"t{i:02}") for i in range(12)]))
    state.handle(add_worker(B), add_worker(C))
    steals = of_type(state.handle(ev.Tick(stimulus_id="tick", now=1.0)), ev.StealRequest)
    assert [s.key for s in steals] == [f"t{i:02}" for i in range(11, 3, -1)]
    thieves = [state.stealing.in_flight[s.key] for s in steals]
    assert thieves == [B, C] * 4  # four tasks each of the twelve, one at a time


def test_stale_and_unknown_messages_are_harmless(state):
    state.handle(add_worker(A))
    assert state.handle(finished("tcp://nobody:1", "x")) == []
    assert state.handle(finished(A, "ghost")) == [ev.FreeKeys(stimulus_id="done-ghost", worker=A,
                                                              keys=("ghost",))]
    state.handle(ev.ClientReleasesKeys(stimulus_id="r", client="c", keys=("nothing",)))
    state.handle(ev.RemoveWorker(stimulus_id="r", address="tcp://nobody:1"))


def test_depth_first_priorities(state):
    state.handle(add_worker(A))
    specs = [spec("r1"), spec("r2"), spec("d1", ["r1"]), spec("d2", ["r2"])]
    state.handle(graph("c", *specs, wanted=["d1", "d2"]))
    order = sorted(state.tasks, key=lambda k: state.tasks[k].priority)
    assert order.index("d1") < order.index("r2")  # finish a branch before the next root


@pytest.mark.timeout(180)  # ~20 s alone; the 2-core machine is shared
def test_scale_100_workers_100k_tasks():
    state = SchedulerState()
    workers = [f"tcp://w{i}:1" for i in range(100)]
    state.handle(*[add_worker(w) for w in workers])
    specs = []
    for i in range(50_000):
        specs.append(spec(f"r{i}", name="root"))
        specs.append(spec(f"d{i}", [f"r{i}"], name="dep"))
    start = time.perf_counter()
    queue = list(state.handle(graph("c", *specs, wanted=[f"d{i}" for i in range(50_000)])))
    reported = set()
    used = set()
    while queue:
        action = queue.pop()
        if isinstance(action, ev.ComputeTask):
            used.add(action.worker)
            queue.extend(state.handle(finished(action.worker, action.key, start=0, stop=0.001)))
        elif isinstance(action, ev.ReportKeyInMemory):
            reported.add(action.key)
    elapsed = time.perf_counter() - start
    assert len(reported) == 50_000
    assert used == set(workers)
    assert all(t.state.value == "memory" for k, t in state.tasks.items() if k.startswith("d"))
    state.validate()
    print(f"100 workers x 100 000 tasks simulated in {elapsed:.1f} s")


def test_an_error_is_noticed_once_at_its_root_and_lost_data_once_per_key(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c1", spec("x"), spec("y", ["x"]), spec("z", ["y"])))
    actions = state.handle(ev.TaskErred(stimulus_id="boom", worker=A, key="x", exception=b"",
                                        traceback=b"", exception_text="ValueError: bad"))
    assert of_type(actions, ev.Notice) == [
        ev.Notice(stimulus_id="boom", event="task-erred", key="x", detail="ValueError: bad")
    ]
    state.handle(graph("c1", spec("a"), spec("b", ["a"]), wanted=["b"]))
    holder = state.tasks["a"].processing_on.address
    state.handle(finished(holder, "a"))
    actions = state.handle(ev.RemoveWorker(stimulus_id="gone", address=holder, reason="test"))
    assert [(n.event, n.key) for n in of_type(actions, ev.Notice)] == [("key-lost", "a")]


def test_tasks_needing_resources_go_only_to_workers_that_have_them():
    state = SchedulerState()
    state.handle(add_worker(A, nthreads=4),
                 ev.AddWorker(stimulus_id="gpu", address=B, nthreads=1, resources={"GPU": 2}))
    actions = state.handle(graph("c1", *(spec(f"g{i}", resources={"GPU": 1}) for i in range(4)),
                                 spec("big", resources={"GPU": 3}), spec("plain")))
    placed = dict((key, worker) for worker, key in computes(actions))
    assert {placed[f"g{i}"] for i in range(4)} == {B}
    assert "big" not in placed
    assert state.task_state("big") == "no-worker"
    assert placed["plain"] == A  # the least loaded worker; resources do not matter
    state.handle(ev.Tick(stimulus_id="tick", now=1.0))  # A is idle, but has no GPU
    assert not state.stealing.in_flight
    actions = state.handle(ev.AddWorker(stimulus_id="c", address=C, nthreads=1,
                                        resources={"GPU": 4}))
    assert computes(actions) == [(C, "big")]
    state.validate()


def test_chains_thousands_deep_are_recomputed_and_released_without_recursion(state):
    depth = 5000  # well past Python's recursion limit
    state.handle(add_worker(A), add_worker(B))
    chain = [spec("c0")] + [spec(f"c{i}", [f"c{i - 1}"]) for i in range(1, depth)]
    last = f"c{depth - 1}"
    actions = state.handle(graph("c1", *chain, wanted=[last]))
    for i in range(depth):
        (worker, key), = computes(actions)
        assert key == f"c{i}"
        actions = state.handle(finished(worker, key))
    holder = next(iter(state.tasks[last].who_has)).address
    actions = state.handle(ev.RemoveWorker(stimulus_id="gone", address=holder, reason="test"))
    assert computes(actions) == [(A if holder == B else B, "c0")]  # recomputed from the root
    assert state.task_state(last) == "waiting"
    state.handle(ev.ClientReleasesKeys(stimulus_id="bye", client="c1", keys=(last,)))
    assert state.tasks == {}


def test_a_recomputed_task_is_not_blamed_for_workers_killed_while_it_reran(state):
    """A root that finished once reruns whenever its data is lost; each restarted worker
    runs it first (slowly, while it starts up) and may die under it again. It finished
    once, so it did not kill them: the old rule made it KilledWorker after three."""
    holder = "tcp://first:1"
    state.handle(add_worker(holder))
    state.handle(graph("c", spec("root"), spec("leaf", ["root"]), wanted=["leaf"]))
    state.handle(finished(holder, "root"))
    for i in range(4):  # the holder dies with "leaf" queued: "root" is lost and reruns
        fresh = f"tcp://fresh{i}:1"
        state.handle(add_worker(fresh))
        actions = state.handle(ev.RemoveWorker(stimulus_id=f"died-{i}", address=holder))
        state.validate()
        assert not of_type(actions, ev.ReportTaskErred)
        assert computes(actions) == [(fresh, "root")]
        state.handle(ev.TaskStarted(stimulus_id=f"start-{i}", worker=fresh, key="root"))
        holder = fresh
    assert state.tasks["root"].suspicious == 0


def test_a_task_that_never_finished_is_still_blamed_after_it_reran(state):
    """Finishing once is what clears a task: one that has only ever been running when
    workers died stays a suspect, however it got there."""
    state.handle(add_worker(A), add_worker(B), add_worker(C))
    state.handle(graph("c", spec("crash")))
    for _ in range(3):
        where = state.tasks["crash"].processing_on.address
        state.handle(ev.TaskStarted(stimulus_id="started", worker=where, key="crash"))
        actions = state.handle(ev.RemoveWorker(stimulus_id="died", address=where),
                               add_worker(f"{where}0"))
    (report,) = of_type(actions, ev.ReportTaskErred)
    assert isinstance(pickle.loads(report.exception), KilledWorker)


def test_a_client_missing_data_hears_of_another_holder_or_waits_for_a_recompute(state):
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c", spec("x", workers=(A,))))
    state.handle(finished(A, "x"))
    state.handle(ev.AddKeys(stimulus_id="copy", worker=B, keys={"x": 8}))
    missing = ev.ClientMissingData(stimulus_id="miss", client="c", key="x", errant_worker=A)
    actions = state.handle(missing)
    assert of_type(actions, ev.FreeKeys) == [ev.FreeKeys(stimulus_id="miss", worker=A,
                                                         keys=("x",))]
    (report,) = of_type(actions, ev.ReportKeyInMemory)
    assert report.who_has == (B,)
    # The last holder is missing it too: the key is recomputed, and reported when done.
    actions = state.handle(ev.ClientMissingData(stimulus_id="miss2", client="c", key="x",
                                                errant_worker=B))
    assert not of_type(actions, ev.ReportKeyInMemory)
    assert not of_type(actions, ev.ReportTaskErred)
    assert computes(actions) == [(A, "x")]
    actions = state.handle(finished(A, "x"))
    assert [a.who_has for a in of_type(actions, ev.ReportKeyInMemory)] == [(A,)]


def test_a_client_missing_scattered_data_gets_data_lost(state):
    state.handle(add_worker(A))
    state.handle(ev.ScatterData(stimulus_id="s", client="c", placed={"d": (A, 8)}))
    actions = state.handle(ev.ClientMissingData(stimulus_id="miss", client="c", key="d",
                                                errant_worker=A))
    (report,) = of_type(actions, ev.ReportTaskErred)
    assert isinstance(pickle.loads(report.exception), DataLostError)


def test_every_stimulus_type_has_exactly_one_handler():
    stimuli = {c for c in vars(ev).values()
               if isinstance(c, type) and issubclass(c, ev.Stimulus) and c is not ev.Stimulus}
    assert set(HANDLERS) == stimuli
    assert all(callable(h) for h in HANDLERS.values())


def test_an_unknown_stimulus_is_refused_by_name(state):
    @dataclasses.dataclass(frozen=True)
    class Gossip(ev.Stimulus):
        pass

    with pytest.raises(UnknownStimulus, match="Gossip"):
        state.handle(Gossip(stimulus_id="g"))


def desire(client, *keys):
    return ev.ClientDesiresKeys(stimulus_id=f"desire-{client}", client=client, keys=keys)


def test_a_future_held_before_its_graph_arrives_gets_the_result(state):
    """A task's result may carry a future of the worker's own client, whose graph comes
    on another connection: the client reading the result may say it holds the key first.
    The key waits as a placeholder, and the graph's task fills it in."""
    state.handle(add_worker(A))
    assert brief(state.handle(desire("reader", "inner"))) == []
    assert brief(state.handle(desire("other", "inner"))) == []  # still no task to run
    actions = state.handle(graph("worker-client", spec("inner")))
    assert computes(actions) == [(A, "inner")]
    assert brief(state.handle(finished(A, "inner"))) == [
        ("record", A, "inner"), ("memory", "reader", "inner"), ("memory", "other", "inner"),
        ("memory", "worker-client", "inner")]
    state.handle(ev.ClientReleasesKeys(stimulus_id="r", client="worker-client", keys=("inner",)))
    assert state.who_has(["inner"]) == {"inner": [A]}  # the readers still hold it


def test_a_placeholder_nobody_holds_any_more_is_forgotten(state):
    state.handle(desire("reader", "never"))
    state.handle(ev.ClientReleasesKeys(stimulus_id="r", client="reader", keys=("never",)))
    assert "never" not in state.tasks


def test_letting_go_of_many_keys_is_one_free_keys_per_worker():
    """Releasing five results held on two workers tells each worker once, all its keys
    in one message; the inputs a finished task no longer needs go the same way."""
    state = SchedulerState(worker_saturation="inf")
    state.handle(add_worker(A), add_worker(B))
    keys = [f"x{i}" for i in range(5)]
    placed = computes(state.handle(graph("c1", *[spec(k) for k in keys])))
    for worker, key in placed:
        state.handle(finished(worker, key))
    held = {w: tuple(k for ww, k in placed if ww == w) for w in (A, B)}
    actions = state.handle(ev.ClientReleasesKeys(stimulus_id="rel", client="c1",
                                                 keys=tuple(keys)))
    assert sorted(brief(actions)) == sorted(("free", w, ks) for w, ks in held.items() if ks)

    state = SchedulerState(worker_saturation="inf")  # one worker: it holds both inputs
    state.handle(add_worker(A))
    placed = computes(state.handle(graph("c2", spec("a"), spec("b"),
                                         spec("sum", deps=("a", "b")), wanted=("sum",))))
    assert placed == [(A, "a"), (A, "b")] or placed == [(A, "b"), (A, "a")]
    state.handle(finished(A, "a"))
    assert computes(state.handle(finished(A, "b"))) == [(A, "sum")]
    frees = [b for b in brief(state.handle(finished(A, "sum"))) if b[0] == "free"]
    assert [(w, set(ks)) for _, w, ks in frees] == [(A, {"a", "b"})]


def test_free_keys_merge_only_while_nothing_else_for_that_worker_comes_between():
    from corral.scheduler.state import _merge_frees

    def free(worker, *keys):
        return ev.FreeKeys(stimulus_id="s", worker=worker, keys=keys)

    compute = ev.ComputeTask(stimulus_id="s", worker=A, key="k", run_spec=b"", priority=(0,),
                             who_has={}, nbytes={})
    actions = ["before", free(A, "1"), free(B, "2"), free(A, "3"), compute, free(A, "k"),
               free(B, "4")]
    _merge_frees(actions, 1)  # type: ignore[arg-type]
    assert actions == ["before", free(A, "1", "3"), free(B, "2", "4"), compute, free(A, "k")]
