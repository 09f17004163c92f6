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


def sent(stimulus_id, message_type, **fields):
    """The instruction to tell the scheduler ``message_type(**fields)``."""
    return ev.SendToScheduler(stimulus_id=stimulus_id,
                              msg=message_type(stimulus_id=stimulus_id, **fields))


def started(stimulus_id, key):
    """What starting ``key`` takes: run it, and say so (with the next write: a short
    task's start rides with its result)."""
    return [ev.Execute(stimulus_id=stimulus_id, key=key),
            ev.SendToScheduler(stimulus_id=stimulus_id, may_wait=True,
                               msg=msgs.TaskStarted(stimulus_id=stimulus_id, key=key))]


def finished(stimulus_id, key, nbytes=8):
    return sent(stimulus_id, msgs.TaskFinished, key=key, nbytes=nbytes, typename="int",
                start=1.0, stop=2.0)


def released(stimulus_id, *keys):
    """Drop fetched copies of ``keys`` and tell the scheduler, one key at a time."""
    return [i for key in keys for i in (ev.ReleaseData(stimulus_id=stimulus_id, keys=(key,)),
                                        sent(stimulus_id, msgs.ReleaseWorkerData, key=key))]


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
    assert ws.handle(compute("x")) == started("c-x", "x")
    out = ws.handle(success("x"))
    assert out == [ev.SendToScheduler(stimulus_id="s-x", msg=msgs.TaskFinished(
        stimulus_id="s-x", key="x", nbytes=8, typename="int", start=1.0, stop=2.0))]


def test_thread_limit_and_priority_order(ws):
    ws.handle(compute("busy1", priority=(0,)), compute("busy2", priority=(0,)))
    assert ws.handle(compute("late", priority=(5,)), compute("soon", priority=(1,))) == []
    assert ws.handle(success("busy1")) == [
        finished("s-busy1", "busy1"), *started("s-busy1", "soon")]


def test_inputs_are_fetched_in_batches_per_peer_never_from_self(ws):
    assert ws.handle(compute("y", {"a": (P1, ME), "b": (P1,), "c": (P2,)})) == [
        ev.GatherDep(stimulus_id="c-y", peer=P1, keys=("a", "b"), total_nbytes=20),
        ev.GatherDep(stimulus_id="c-y", peer=P2, keys=("c",), total_nbytes=10),
    ]
    out = ws.handle(ev.GatherDepSuccess(stimulus_id="g1", peer=P1, data={"a": 10, "b": 10}))
    assert out == [sent("g1", msgs.AddKeys, keys={"a": 10, "b": 10})]  # y still waits for c
    out = ws.handle(ev.GatherDepSuccess(stimulus_id="g2", peer=P2, data={"c": 10}))
    assert out == [sent("g2", msgs.AddKeys, keys={"c": 10}), *started("g2", "y")]
    # Fetched inputs go once their task is done.
    assert ws.handle(success("y")) == [finished("s-y", "y"), *released("s-y", "a", "b", "c")]


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
    assert out == [sent("f", msgs.TaskErred, key="x", exception=b"e", traceback=b"",
                        exception_text="E", traceback_text="tb", start=0, stop=1)]


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
    assert ws.handle(ev.FreeKeys(stimulus_id="free", keys=("a",))) == []
    assert ws.handle(success("b")) == [finished("s-b", "b"), *released("s-b", "a")]


def test_steal_request_both_ways(ws):
    ws.handle(compute("r1"), compute("r2"), compute("queued"))
    assert ws.handle(ev.StealRequest(stimulus_id="st", key="queued")) == [
        sent("st", msgs.StealResponse, key="queued", released=True)]
    assert ws.handle(ev.StealRequest(stimulus_id="st", key="r1")) == [
        sent("st", msgs.StealResponse, key="r1", released=False)]


def test_a_task_arriving_with_its_steal_request_starts_if_a_thread_is_free(ws):
    """Compute messages and a steal request in one batch (a cancel-unless-started right
    after submitting): what free threads would start is started, the rest released."""
    out = ws.handle(compute("a"), compute("b"), compute("c"),
                    ev.StealRequest(stimulus_id="st-a", key="a"),
                    ev.StealRequest(stimulus_id="st-c", key="c"))
    assert out == [
        *started("st-a", "a"),
        *started("st-a", "b"),
        sent("st-a", msgs.StealResponse, key="a", released=False),
        sent("st-c", msgs.StealResponse, key="c", released=True),
    ]


def test_update_data_makes_waiting_tasks_ready(ws):
    ws.handle(compute("y", {"d": ("tcp://gone:1",)}))
    assert ws.handle(ev.UpdateData(stimulus_id="u", data={"d": 5})) == [
        sent("u", msgs.AddKeys, keys={"d": 5}), *started("u", "y")]


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
    st.builds(lambda k: ev.AcquireReplicas(stimulus_id="r", who_has={k: (P1,)}, nbytes={k: 1}),
              st.sampled_from(KEYS)),
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
