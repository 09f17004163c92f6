"""The worker state machine, driven without sockets, threads or clocks."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import messages as msgs
from corral.worker import events as ev
from corral.worker.state import WorkerState

ME, P1, P2 = "tcp://me:1", "tcp://p1:1", "tcp://p2:1"


def compute(key, deps=None, priority=(0,), nbytes=None):
    deps = deps or {}
    return ev.ComputeTask(stimulus_id=f"c-{key}", key=key, run_spec=b"", who_has=deps,
                          nbytes=nbytes or {d: 10 for d in deps}, priority=priority)


def success(key, nbytes=8):
    return ev.ExecuteSuccess(stimulus_id=f"s-{key}", key=key, nbytes=nbytes, typename="int",
                             start=1.0, stop=2.0)


def of(instructions, kind):
    return [i for i in instructions if isinstance(i, kind)]


def ops(instructions):
    """What the worker tells the scheduler, leaving out the routine "task-started" notes."""
    sent = [i.msg.op for i in of(instructions, ev.SendToScheduler)]
    return [op for op in sent if op != "task-started"]


@pytest.fixture
def ws():
    state = WorkerState(ME, nthreads=2, max_concurrent_transfers=2,
                        transfer_message_target_bytes=25)
    yield state
    state.validate()


def test_a_task_without_inputs_runs_at_once(ws):
    assert ws.handle(compute("x")) == [
        ev.Execute(stimulus_id="c-x", key="x"),
        ev.SendToScheduler(stimulus_id="c-x", msg=msgs.TaskStarted(stimulus_id="c-x", key="x")),
    ]
    out = ws.handle(success("x"))
    assert out == [ev.SendToScheduler(stimulus_id="s-x", msg=msgs.TaskFinished(
        stimulus_id="s-x", key="x", nbytes=8, typename="int", start=1.0, stop=2.0))]


def test_thread_limit_and_priority_order(ws):
    ws.handle(compute("busy1", priority=(0,)), compute("busy2", priority=(0,)))
    out = ws.handle(compute("late", priority=(5,)), compute("soon", priority=(1,)))
    assert of(out, ev.Execute) == []
    out = ws.handle(success("busy1"))
    assert of(out, ev.Execute) == [ev.Execute(stimulus_id="s-busy1", key="soon")]


def test_inputs_are_fetched_in_batches_per_peer_never_from_self(ws):
    out = ws.handle(compute("y", {"a": (P1, ME), "b": (P1,), "c": (P2,)}))
    gathers = sorted((g.peer, g.keys) for g in of(out, ev.GatherDep))
    assert gathers == [(P1, ("a", "b")), (P2, ("c",))]
    out = ws.handle(ev.GatherDepSuccess(stimulus_id="g1", peer=P1, data={"a": 10, "b": 10}))
    assert ops(out) == ["add-keys"]
    assert of(out, ev.Execute) == []
    out = ws.handle(ev.GatherDepSuccess(stimulus_id="g2", peer=P2, data={"c": 10}))
    assert of(out, ev.Execute) == [ev.Execute(stimulus_id="g2", key="y")]
    out = ws.handle(success("y"))
    released = sorted(k for r in of(out, ev.ReleaseData) for k in r.keys)
    assert released == ["a", "b", "c"]  # fetched inputs go once their task is done
    assert ops(out).count("release-worker-data") == 3


def test_global_transfer_limit(ws):
    ws.handle(compute("y", {"a": (P1,), "b": ("tcp://p3:1",), "c": (P2,)},
                      nbytes={"a": 30, "b": 30, "c": 30}))
    assert len(ws.in_flight) == 2


def test_missing_and_failed_transfers_try_other_holders(ws):
    out = ws.handle(compute("y", {"a": (P1, P2)}))
    (gather,) = of(out, ev.GatherDep)
    first = gather.peer
    other = P2 if first == P1 else P1
    out = ws.handle(ev.GatherDepMissing(stimulus_id="m", peer=first, keys=("a",)))
    assert ops(out) == ["missing-data"]
    out = ws.handle(ev.GatherDepSuccess(stimulus_id="x", peer=first, data={}))
    (retry,) = of(out, ev.GatherDep)
    assert retry.peer == other
    out = ws.handle(ev.GatherDepFailure(stimulus_id="f", peer=other, keys=("a",)))
    assert ops(out) == ["missing-data"]
    assert ws.tasks["a"].state.value == "missing"


def test_failure_is_reported(ws):
    ws.handle(compute("x"))
    out = ws.handle(ev.ExecuteFailure(stimulus_id="f", key="x", exception=b"e", traceback=b"",
                                      exception_text="E", traceback_text="tb", start=0, stop=1))
    assert ops(out) == ["task-erred"]


def test_freeing_an_executing_task_drops_its_result(ws):
    ws.handle(compute("x"))
    assert ws.handle(ev.FreeKeys(stimulus_id="free", keys=("x",))) == []
    out = ws.handle(success("x"))
    assert out == [ev.ReleaseData(stimulus_id="s-x", keys=("x",))]
    assert "x" not in ws.tasks


def test_memory_kept_while_a_local_task_needs_it(ws):
    ws.handle(compute("a"))
    ws.handle(success("a"))
    ws.handle(compute("b", {"a": (ME,)}), compute("blocker"))
    out = ws.handle(ev.FreeKeys(stimulus_id="free", keys=("a",)))
    assert of(out, ev.ReleaseData) == []
    out = ws.handle(success("b"))
    assert ev.ReleaseData(stimulus_id="s-b", keys=("a",)) in out


def test_steal_request_both_ways(ws):
    ws.handle(compute("r1"), compute("r2"), compute("queued"))
    out = ws.handle(ev.StealRequest(stimulus_id="st", key="queued"))
    assert out[-1].msg == msgs.StealResponse(stimulus_id="st", key="queued", released=True)
    out = ws.handle(ev.StealRequest(stimulus_id="st", key="r1"))
    assert out[-1].msg == msgs.StealResponse(stimulus_id="st", key="r1", released=False)


def test_a_task_arriving_with_its_steal_request_starts_if_a_thread_is_free(ws):
    """Compute messages and a steal request in one batch (a cancel-unless-started right
    after submitting): what free threads would start is started, the rest released."""
    out = ws.handle(compute("a"), compute("b"), compute("c"),
                    ev.StealRequest(stimulus_id="st-a", key="a"),
                    ev.StealRequest(stimulus_id="st-c", key="c"))
    assert of(out, ev.Execute) == [ev.Execute(stimulus_id="st-a", key="a"),
                                   ev.Execute(stimulus_id="st-a", key="b")]
    assert [i.msg for i in of(out, ev.SendToScheduler)
            if isinstance(i.msg, msgs.StealResponse)] == [
        msgs.StealResponse(stimulus_id="st-a", key="a", released=False),
        msgs.StealResponse(stimulus_id="st-c", key="c", released=True),
    ]


def test_update_data_makes_waiting_tasks_ready(ws):
    ws.handle(compute("y", {"d": ("tcp://gone:1",)}))
    out = ws.handle(ev.UpdateData(stimulus_id="u", data={"d": 5}))
    assert ops(out) == ["add-keys"]
    assert of(out, ev.Execute) == [ev.Execute(stimulus_id="u", key="y")]


def test_duplicates_and_unknown_keys_are_harmless(ws):
    ws.handle(compute("x"))
    assert ws.handle(compute("x")) == []
    ws.handle(success("x"))
    assert ops(ws.handle(compute("x"))) == ["task-finished"]
    assert ws.handle(ev.FreeKeys(stimulus_id="f", keys=("nope",))) == []
    assert ws.handle(success("ghost")) == [ev.ReleaseData(stimulus_id="s-ghost", keys=("ghost",))]
    ws.handle(ev.RemoveWorkerPeer(stimulus_id="r", peer=P1))


KEYS = ["a", "b", "c", "d"]
stimuli = st.one_of(
    st.builds(lambda k, deps: compute(k, {d: (P1,) for d in deps if d != k}),
              st.sampled_from(KEYS), st.lists(st.sampled_from(KEYS), max_size=2)),
    st.builds(success, st.sampled_from(KEYS)),
    st.builds(lambda k: ev.FreeKeys(stimulus_id="f", keys=(k,)), st.sampled_from(KEYS)),
    st.builds(lambda k: ev.StealRequest(stimulus_id="s", key=k), st.sampled_from(KEYS)),
    st.builds(lambda ks: ev.GatherDepSuccess(stimulus_id="g", peer=P1, data=dict.fromkeys(ks, 1)),
              st.lists(st.sampled_from(KEYS), max_size=3)),
    st.builds(lambda ks: ev.GatherDepFailure(stimulus_id="x", peer=P1, keys=tuple(ks)),
              st.lists(st.sampled_from(KEYS), max_size=3)),
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(stimuli, max_size=25))
def test_random_stimuli_keep_the_invariants(sequence):
    state = WorkerState(ME, nthreads=1)
    for stimulus in sequence:
        state.handle(stimulus)
        state.validate()


def test_tasks_needing_resources_run_only_while_enough_is_free():
    ws = WorkerState(ME, nthreads=4, resources={"GPU": 2})
    gpu = {"GPU": 1}
    started = [i.key for i in of(ws.handle(*(
        ev.ComputeTask(stimulus_id=f"c-{k}", key=k, run_spec=b"", who_has={}, nbytes={},
                       priority=(p,), resources=gpu) for p, k in enumerate("abc"))), ev.Execute)]
    assert started == ["a", "b"]  # c waits for a GPU although threads are free
    plain = of(ws.handle(compute("plain", priority=(9,))), ev.Execute)
    assert [i.key for i in plain] == ["plain"]  # behind c in priority, but it fits
    assert [i.key for i in of(ws.handle(success("a")), ev.Execute)] == ["c"]
    assert ws.available_resources == {"GPU": 0}
    ws.handle(ev.FreeKeys(stimulus_id="free", keys=("b",)))  # cancelled: still running
    assert ws.available_resources == {"GPU": 0}
    ws.handle(success("b"), success("c"))
    assert ws.available_resources == {"GPU": 2}
    ws.validate()
