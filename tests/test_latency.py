"""The path of one small task, submit to result: what it may not cost (issue 18)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from corral import Client, LocalCluster

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
