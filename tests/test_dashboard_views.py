"""The dashboard's pure parts: timeline, views of the state, access rules. No sockets."""

from __future__ import annotations

import time

import pytest

from corral.dashboard import access, snapshot
from corral.dashboard.listen import parse_address
from corral.scheduler import events as ev
from corral.scheduler.state import SchedulerState
from corral.scheduler.timeline import DURATION_BUCKETS, Timeline
from corral.security import Security
from tests.test_scheduler_state import add_worker, finished, graph, spec

A, B = "tcp://a:1", "tcp://b:1"


def test_timeline_hands_out_only_what_came_after_and_what_it_still_holds():
    timeline = Timeline(maxlen=3)
    for i in range(5):
        timeline.task_finished(f"k{i}", "inc", A, i, i + 0.002, 8)
    seq, records = timeline.since(3)
    assert seq == 5
    assert [r.key for r in records] == ["k3", "k4"]
    seq, records = timeline.since(0)  # asked for 5, only the last 3 are kept
    assert [r.key for r in records] == ["k2", "k3", "k4"]
    assert timeline.since(5) == (5, [])
    assert timeline.finished == {"inc": 5}


def test_timeline_histogram_is_cumulative_and_ends_with_every_task():
    timeline = Timeline()
    for duration in (0.0001, 0.002, 0.002, 0.3, 100.0):
        timeline.task_finished("k", "f", A, 10.0, 10.0 + duration, 1)
    histogram = timeline.histogram()
    assert [bound for bound, _ in histogram] == list(DURATION_BUCKETS)
    counts = dict(histogram)
    assert counts[0.0005] == 1
    assert counts[0.005] == 3
    assert counts[0.5] == 4
    assert counts[float("inf")] == 5
    assert timeline.duration_sum == pytest.approx(100.3041)


def test_transfers_are_counted_and_appear_in_the_stream():
    timeline = Timeline()
    timeline.transfer(B, A, 1.0, 1.5, 1000)
    timeline.transfer(B, A, 2.0, 2.5, 500)
    assert (timeline.transfers, timeline.transferred_bytes) == (2, 1500)
    assert timeline.since(0)[1][0].key == f"{A} → {B}"


@pytest.fixture
def busy_state():
    """x, y → z on two workers; x finished on A, y processing on B."""
    state = SchedulerState(default_duration=0.5)
    state.handle(add_worker(A), add_worker(B))
    state.handle(graph("c1", spec("x", name="load"), spec("y", name="load"),
                       spec("z", ["x", "y"], name="combine"), wanted=["z"]))
    state.handle(finished(A, "x"))
    return state


def test_progress_groups_by_function_and_counts_each_state(busy_state):
    timeline = Timeline()
    timeline.task_finished("x", "load", A, 0, 1, 8)
    rows = {r["name"]: r for r in snapshot.progress(busy_state, timeline)}
    assert rows["load"] == {"name": "load", "waiting": 0, "processing": 1, "memory": 1,
                            "erred": 0, "finished": 1}
    assert rows["combine"]["waiting"] == 1


def test_worker_rows_join_the_state_and_the_heartbeats(busy_state):
    info = {A: {"name": "a", "metrics": {"memory": 1e6, "cpu": 50.0, "latency": 0.002},
                "last_seen": 99.0}}
    rows = {r["address"]: r for r in snapshot.workers(busy_state, info, now=100.0)}
    assert rows[A]["memory"] == 1e6
    assert rows[A]["last_seen"] == 1.0
    assert rows[A]["keys"] == 1
    assert rows[B]["processing"] == 1
    assert rows[B]["memory"] == 0.0


def test_task_detail_names_its_neighbours_and_its_error(busy_state):
    detail = snapshot.task_detail(busy_state, "z")
    assert detail["state"] == "waiting"
    assert {d["key"] for d in detail["dependencies"]} == {"x", "y"}
    assert detail["wanted_by"] == ["c1"]
    busy_state.handle(ev.TaskErred(stimulus_id="boom", worker=B, key="y", exception=b"",
                                   traceback=b"", exception_text="ValueError: bad",
                                   traceback_text="Traceback ..."))
    erred = snapshot.task_detail(busy_state, "y")
    assert erred["state"] == "erred"
    assert erred["exception"] == "ValueError: bad"
    assert [step[:2] for step in erred["story"]][-1] == ["processing", "erred"]
    assert snapshot.task_detail(busy_state, "nope") is None


def test_tuple_keys_are_found_by_how_they_print():
    state = SchedulerState()
    state.handle(add_worker(A))
    state.handle(ev.UpdateGraph(stimulus_id="g", client="c", wanted=(("x", 1),),
                                tasks=(ev.TaskSpec(key=("x", 1), run_spec=b""),)))
    assert snapshot.task_detail(state, "('x', 1)")["key"] == "('x', 1)"


def test_graph_is_truncated_with_its_edges_kept_inside(busy_state):
    full = snapshot.graph(busy_state)
    assert full["total"] == 3
    assert not full["truncated"]
    assert len(full["edges"]) == 2
    part = snapshot.graph(busy_state, limit=2)
    assert part["truncated"]
    assert len(part["nodes"]) == 2
    assert all(a < 2 and b < 2 for a, b in part["edges"])


@pytest.mark.parametrize(("header", "host"), [
    ("localhost:8787", "localhost"), ("127.0.0.1", "127.0.0.1"), ("[::1]:8787", "::1"),
    ("Evil.Example:80", "evil.example"), ("", ""),
])
def test_host_header_names(header, host):
    assert access.host_name(header) == host


def test_allowed_hosts_are_the_bound_address_and_this_machine():
    loopback = access.allowed_hosts("127.0.0.1")
    assert {"localhost", "127.0.0.1"} <= loopback
    assert "evil.example" not in loopback
    assert "10.9.8.7" in access.allowed_hosts("10.9.8.7")
    assert "127.0.0.1" in access.allowed_hosts("0.0.0.0")  # every interface's address


def test_cookie_holds_a_digest_not_the_token_and_bearer_works():
    security = Security.generate()
    cookie = access.session_value(security, time.time() + 60)
    assert cookie
    assert security.token not in cookie
    assert access.authorized(security, cookie, None)
    assert access.authorized(security, None, f"Bearer {security.token}")
    assert not access.authorized(security, None, None)
    assert not access.authorized(security, "forged", "Bearer wrong")
    assert not access.authorized(security, security.token, None)  # the token is no cookie
    assert access.authorized(None, None, None)  # an open cluster


def test_login_cookie_expires(monkeypatch):
    security = Security.generate()
    expires = 1_000_000.0
    cookie = access.session_value(security, expires)
    assert access.authorized(security, cookie, None, now=expires - 1)
    assert not access.authorized(security, cookie, None, now=expires)
    stamp, digest = cookie.split(".")
    extended = f"{int(stamp) + 10**6}.{digest}"  # a later expiry under the same digest
    assert not access.authorized(security, extended, None, now=expires - 1)
    assert access.session_lifetime() == 12 * 3600
    monkeypatch.setenv("CORRAL_DASHBOARD_SESSION_HOURS", "0.5")
    assert access.session_lifetime() == 1800


def test_dashboard_addresses():
    assert parse_address(":8787", "127.0.0.1") == ("127.0.0.1", 8787)
    assert parse_address("0.0.0.0:0", "127.0.0.1") == ("0.0.0.0", 0)
    assert parse_address("[::1]:9000", "x") == ("::1", 9000)
    with pytest.raises(ValueError, match="HOST"):
        parse_address("nowhere", "x")
