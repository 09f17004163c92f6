"""The path of one small task, submit to result: what it may not cost (issue 18)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from corral import Client, LocalCluster
from corral.utils import LoopRunner
from tests._helpers import wait_until_blocking

RELEASE = threading.Event()


def blocked(x: int) -> int:
    RELEASE.wait(30)
    return x + 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as c:
        yield c


def test_sync_result_waits_in_the_callers_thread(cluster: LocalCluster,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting for a pending task is an event the loop sets, not a coroutine run on the
    loop (a round trip through it, for every ``result()``)."""
    RELEASE.clear()
    with Client(cluster.scheduler_address) as client:
        future = client.submit(blocked, 1, pure=False)
        runner = client.core.runner
        assert runner is not None
        runs: list[object] = []
        original = runner.run
        monkeypatch.setattr(runner, "run", lambda coro, *a, **k: (runs.append(coro),
                                                                   original(coro, *a, **k))[1])
        with pytest.raises(TimeoutError, match=r"timed out after 0\.2 s"):
            future.result(timeout=0.2)
        assert runs == []
        RELEASE.set()
        assert future.result(timeout=30) == 2


UNPICKLED_IN: list[str] = []


class Traced:
    """Records the thread that unpickles it."""

    def __init__(self, payload: bytes = b"") -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.payload,))


def _rebuild(payload: bytes) -> Traced:
    UNPICKLED_IN.append(threading.current_thread().name)
    return Traced(payload)


def make_traced(n: int) -> Traced:
    return Traced(b"x" * n)


def _count_get_data(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    for worker in cluster.workers.values():
        original = worker.server.handlers["get_data"]
        monkeypatch.setitem(worker.server.handlers, "get_data",
                            lambda comm, _o=original, **kw: (calls.append(kw), _o(comm, **kw))[1])
    return calls


def test_small_result_comes_with_the_report(cluster: LocalCluster,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """No fetch from the worker; the scheduler relays it unread: it is unpickled once,
    in the caller's thread (the scheduler and workers here run on the loop's thread)."""
    calls = _count_get_data(cluster, monkeypatch)
    UNPICKLED_IN.clear()
    with Client(cluster.scheduler_address) as client:
        value = client.submit(make_traced, 10, pure=False).result(timeout=30)
    assert value.payload == b"x" * 10
    assert calls == []
    assert UNPICKLED_IN == [threading.current_thread().name]


def test_large_result_is_fetched(cluster: LocalCluster,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_get_data(cluster, monkeypatch)
    with Client(cluster.scheduler_address) as client:
        value = client.submit(make_traced, 200_000, pure=False).result(timeout=30)
    assert len(value.payload) == 200_000
    assert len(calls) == 1


def test_scheduler_relays_result_bytes_unread() -> None:
    """Bytes that are no pickle at all pass through the state machine as they are (only
    for a task a client waits for), and its stimulus log keeps none of them."""
    from corral.scheduler import events as ev
    from corral.scheduler.state import SchedulerState

    state = SchedulerState(inline_result_bytes=1000)
    state.handle(ev.AddWorker(stimulus_id="add", address="tcp://a:1", nthreads=1))
    actions = state.handle(ev.UpdateGraph(
        stimulus_id="graph", client="c1", wanted=("x",),
        tasks=(ev.TaskSpec(key="x", run_spec=b"spec"),)))
    (compute,) = [a for a in actions if isinstance(a, ev.ComputeTask)]
    assert compute.inline_result == 1000
    blob = b"\x00 not a pickle \xff"
    actions = state.handle(ev.TaskFinished(stimulus_id="done", worker="tcp://a:1", key="x",
                                           nbytes=8, pickled=blob))
    (report,) = [a for a in actions if isinstance(a, ev.ReportKeyInMemory)]
    assert report.pickled is blob
    assert all(getattr(s, "pickled", None) is None for s in state.stimuli)


def payload(i: int) -> bytes:
    return bytes([i]) * 10_000


def test_the_client_keeps_inline_results_up_to_its_budget(cluster: LocalCluster) -> None:
    """Results that came with their reports are dropped oldest first past the budget;
    their futures then fetch them from the worker, like any other result."""
    from corral import config

    with config.set({"client.inline-results-budget": "45kB"}), \
            Client(cluster.scheduler_address) as client:
        futures = [client.submit(payload, i, pure=False) for i in range(10)]
        client.gather(futures)
        kept = [f for f in futures if f._state.pickled is not None]
        held = client.core.inline_results
        assert 0 < held.total <= 45_000
        assert kept == futures[-4:]  # the newest four
        assert [f.result() for f in futures] == [payload(i) for i in range(10)]
        assert client.gather(futures) == [payload(i) for i in range(10)]


def test_a_client_shares_the_loop_of_the_cluster_in_its_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync client and the scheduler of a ``LocalCluster`` in the same process run on
    one loop thread (no hand-over between two threads per message); the loop outlives
    whichever closes first and stops with the last."""
    monkeypatch.setattr(LoopRunner, "_shared", None)  # not the module's cluster's loop
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        loop = cluster._runner.loop  # type: ignore[union-attr]
        with Client(cluster.scheduler_address) as client:
            assert client.core.runner is not None
            assert client.core.runner.loop is loop
            assert client.submit(abs, -3).result(timeout=10) == 3
        assert not loop.is_closed()  # the cluster still runs on it
        with Client(cluster.scheduler_address) as again:
            assert again.submit(abs, -4).result(timeout=10) == 4
    assert loop.is_closed()


def _record_stimuli(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch,
                    kind: type) -> list[object]:
    """Every stimulus of ``kind`` the cluster's scheduler handles from now on."""
    state = cluster.scheduler.state  # type: ignore[union-attr]
    seen: list[object] = []
    original = state.handle

    def handle(*stimuli: object) -> object:
        seen.extend(s for s in stimuli if isinstance(s, kind))
        return original(*stimuli)

    monkeypatch.setattr(state, "handle", handle)
    return seen


def test_dropping_many_futures_is_a_few_release_messages(
        cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The futures ``gather`` returned, dropped at once, reach the scheduler as a few
    releases of many keys, not one message per key; every key is still let go."""
    from corral import messages as msgs

    releases = _record_stimuli(cluster, monkeypatch, msgs.ClientReleasesKeys)
    state = cluster.scheduler.state  # type: ignore[union-attr]
    with Client(cluster.scheduler_address) as client:
        futures = client.map(abs, range(-500, 0), pure=False)
        keys = {f.key for f in futures}
        assert client.gather(futures) == list(range(500, 0, -1))
        del futures
        wait_until_blocking(lambda: not keys & state.tasks.keys(), 10,
                            "the scheduler forgot every released key")
        released = [key for r in releases for key in r.keys]  # type: ignore[attr-defined]
        assert sorted(released) == sorted(keys)
        assert len(releases) <= 10, len(releases)


def test_a_key_released_and_submitted_again_is_computed_again(cluster: LocalCluster) -> None:
    """A release still owed when the same key is submitted again goes first: the
    scheduler must not drop the new submission."""
    with Client(cluster.scheduler_address) as client:
        for _ in range(50):
            assert client.submit(abs, -7, key="same").result(timeout=10) == 7


def test_a_short_tasks_start_report_is_taken_back_a_long_ones_is_not(
        cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start report still queued when its task's result follows is dropped (the
    result says it ran); a task that runs on has its start reported, for blame."""
    from corral import messages as msgs

    starts = _record_stimuli(cluster, monkeypatch, msgs.TaskStarted)
    state = cluster.scheduler.state  # type: ignore[union-attr]
    with Client(cluster.scheduler_address) as client:
        for i in range(100):
            client.submit(abs, -i, pure=False).result(timeout=10)
        assert len(starts) < 50, len(starts)  # the odd one may go with another write
        RELEASE.clear()
        future = client.submit(blocked, 1, pure=False)
        wait_until_blocking(lambda: any(ts.key == future.key for ws in state.workers.values()
                                        for ts in ws.executing), 10,
                            "the scheduler heard the long task start")
        RELEASE.set()
        assert future.result(timeout=10) == 2


def step(x: int) -> int:
    return x + 1


def test_dropping_an_input_right_after_submitting_its_task_keeps_the_order(
        cluster: LocalCluster) -> None:
    """``x = client.submit(step, x)`` drops the input just after the task that needs it
    was queued for the loop: the release must not overtake the task."""
    with Client(cluster.scheduler_address) as client:
        for _ in range(3):
            x = client.submit(step, 0, pure=False)
            for _ in range(300):
                x = client.submit(step, x, pure=False)
            assert x.result(timeout=30) == 301


def test_releases_join_a_batch_until_something_else_is_queued() -> None:
    from corral.client.holdings import Holdings

    holdings = Holdings()
    for key in "abcd":
        holdings.acquire(key)
    holdings.acquire("a")  # two futures of "a"
    assert holdings.release_later("a") is None  # not the last one
    first = holdings.release_later("a")
    assert first == ["a"]
    assert holdings.release_later("b") is None  # joined
    holdings.queued()  # e.g. a submit: what is released after it goes after it
    second = holdings.release_later("c")
    assert second == ["c"]
    assert second is not first
    assert holdings.take(first) == ("a", "b")
    assert holdings.take(second) == ("c",)
    assert holdings.release_later("d") == ["d"]  # taken batches are closed
    assert holdings.states == {}
