"""The dashboard over real HTTP: API and /metrics during a computation, auth, Host checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral import Client, LocalCluster, progress
from corral.deploy.dashboard import attach_dashboard
from corral.scheduler import Scheduler
from tests._helpers import wait_until, wait_until_blocking

pytestmark = pytest.mark.usefixtures("no_leaks")


def slow_inc(x: int) -> int:
    import time

    time.sleep(0.01)
    return x + 1


def fail(x: int) -> int:
    raise ZeroDivisionError(f"no {x}")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of a GET, without following redirects."""
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0",
                      worker_options=("--liveness-timeout", "30")) as cluster:
        # Serving a file starts the loop's executor thread once: not a leak of any test.
        port, token = cluster.dashboard.port, cluster.security.token
        assert http(f"http://127.0.0.1:{port}/status", {"Authorization": f"Bearer {token}"}
                    )[0] == 200
        yield cluster


@pytest.fixture
def client(cluster):
    with Client(cluster) as client:
        yield client


@pytest.fixture
def api(cluster):
    """GET a dashboard path with the token; returns the decoded JSON (or text)."""
    base = f"http://127.0.0.1:{cluster.dashboard.port}"
    auth = {"Authorization": f"Bearer {cluster.security.token}"}

    def get(path: str) -> Any:
        status, headers, body = http(base + path, auth)
        assert status == 200, (path, status, body)
        return json.loads(body) if headers["Content-Type"].startswith("application/json") \
            else body

    get.base = base
    return get


def metrics(text: str) -> dict[str, float]:
    """Prometheus samples by name and labels, parsed with prometheus_client's parser."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{label}}}" if label else s.name] = s.value
    return samples


def test_api_and_metrics_follow_a_running_computation(client, api):
    before = api("/api/summary")["finished"]
    futures = client.map(slow_inc, range(400))
    total = client.submit(sum, futures)
    seen_running = []
    deadline = time.monotonic() + 30
    while not total.done() and time.monotonic() < deadline:
        summary = api("/api/summary")
        seen_running.append(summary["finished"])
        time.sleep(0.2)
    assert total.result() == sum(range(1, 401))
    after = api("/api/summary")
    assert after["finished"] >= before + 401
    assert len(set(seen_running)) >= 3, "finished count did not move during the run"
    assert seen_running == sorted(seen_running)

    workers = api("/api/workers")
    assert len(workers) == 2
    assert all(w["memory"] > 0 for w in workers)
    progress_rows = {r["name"]: r for r in api("/api/progress")}
    assert progress_rows["slow_inc"]["finished"] >= 400
    in_memory = api("/api/tasks?state=memory")
    assert in_memory["total"] >= 401
    detail = api(f"/api/task?key={total.key}")
    assert detail["state"] == "memory"
    assert len(detail["dependencies"]) == 400
    stream = api("/api/stream?since=0")
    assert {r[2] for r in stream["records"]} >= {"slow_inc", "sum"}

    # The sum gathered inputs from the other worker: heartbeats report the transfers.
    wait_until_blocking(lambda: metrics(api("/metrics"))["corral_transferred_bytes_total"] > 0,
                        10, what="a transfer reported in a heartbeat")
    m = metrics(api("/metrics"))
    assert m["corral_workers"] == 2
    assert m["corral_tasks{state=memory}"] >= 401
    assert m["corral_tasks_finished_total{name=slow_inc}"] >= 400
    assert m["corral_task_duration_seconds_count"] >= after["finished"]
    assert m["corral_task_duration_seconds_bucket{le=0.005}"] < m[
        "corral_task_duration_seconds_bucket{le=0.05}"]  # 10 ms tasks land above 5 ms
    assert m["corral_task_duration_seconds_sum"] >= 400 * 0.01
    assert all(v >= 0 for k, v in m.items() if k.startswith("corral_comm_latency_seconds"))
    del futures, total


def test_metrics_change_as_tasks_complete(client, api):
    first = metrics(api("/metrics"))
    client.gather(client.map(slow_inc, range(1000, 1050)))
    second = metrics(api("/metrics"))
    key = "corral_tasks_finished_total{name=slow_inc}"
    assert second[key] - first.get(key, 0) == 50
    assert (second["corral_task_duration_seconds_count"]
            - first["corral_task_duration_seconds_count"]) == 50


def test_erred_task_detail_and_one_log_line(client, api, caplog):
    caplog.set_level(logging.WARNING, logger="corral.scheduler")
    future = client.submit(fail, 7)
    downstream = client.submit(slow_inc, future)
    with pytest.raises(ZeroDivisionError):
        downstream.result()
    detail = api(f"/api/task?key={future.key}")
    assert detail["state"] == "erred"
    assert "ZeroDivisionError: no 7" in detail["exception"]
    assert "Traceback" in detail["traceback"]
    lines = [r.getMessage() for r in caplog.records if future.key in r.getMessage()]
    assert len(lines) == 1, lines
    assert "task-erred" in lines[0]
    assert not [r for r in caplog.records if downstream.key in r.getMessage()]


def test_api_refuses_bad_queries_clearly(api, cluster):
    auth = {"Authorization": f"Bearer {cluster.security.token}"}
    status, _, body = http(api.base + "/api/tasks?state=sleeping", auth)
    assert status == 400
    assert "state must be one of" in body
    status, _, body = http(api.base + "/api/task?key=never-submitted", auth)
    assert status == 404
    assert "never-submitted" in body
    status, _, _ = http(api.base + "/api/stream?since=abc", auth)
    assert status == 400


def test_dashboard_needs_the_token_then_a_cookie(client, cluster):
    base = f"http://127.0.0.1:{cluster.dashboard.port}"
    for path in ("/status", "/workers", "/api/workers", "/metrics", "/api/task?key=x"):
        status, _, body = http(base + path)
        assert status == 401, path
        assert cluster.security.token not in body
    assert http(base + "/login?token=wrong")[0] == 401
    assert http(base + "/health")[0] == 200  # says nothing but "ok"

    link = client.dashboard_link
    assert link.startswith(base + "/login?token=")
    status, headers, _ = http(link)
    assert status == 302
    assert headers["Location"] == "/status"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Max-Age=43200" in cookie  # a login lasts 12 hours
    assert cluster.security.token not in cookie
    session = cookie.split(";")[0]
    status, _, page = http(base + "/status", {"Cookie": session})
    assert status == 200
    assert "task stream" in page.lower()
    assert http(base + "/api/summary", {"Cookie": session})[0] == 200


def test_foreign_host_headers_and_origins_are_refused(cluster):
    base = f"http://127.0.0.1:{cluster.dashboard.port}"
    token = {"Authorization": f"Bearer {cluster.security.token}"}
    status, _, body = http(base + "/api/summary", {**token, "Host": "evil.example:8787"})
    assert status == 403
    assert "evil.example" in body
    assert http(base + "/health", {"Host": "evil.example"})[0] == 403
    assert http(base + "/api/summary", {**token, "Host": f"localhost:{base[-5:]}"})[0] == 200

    async def websocket(origin: str) -> Any:
        async with aiohttp.ClientSession(headers=token) as session:
            try:
                async with session.ws_connect(base + "/ws", origin=origin) as ws:
                    return json.loads((await ws.receive(timeout=10)).data)
            except aiohttp.WSServerHandshakeError as e:
                return e.status

    assert asyncio.run(websocket("http://evil.example")) == 403
    first = asyncio.run(websocket(base))
    assert {"summary", "workers", "progress", "stream"} <= set(first)


async def test_an_open_scheduler_serves_its_dashboard_without_login():
    async with Scheduler() as scheduler:
        await scheduler.listen("tcp://127.0.0.1:0")
        dashboard = await attach_dashboard(scheduler, "127.0.0.1:0",
                                           allowed_hosts=("dash.example.org",))
        assert scheduler.services == {"dashboard": dashboard}  # the scheduler closes it
        base = dashboard.url
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/status") as response:
                assert response.status == 200
            async with session.get(base + "/login", allow_redirects=False) as response:
                assert response.status == 302
            for host, status in (("dash.example.org", 200), ("other.example.org", 403)):
                async with session.get(base + "/health", headers={"Host": host}) as response:
                    assert response.status == status, host


async def test_busy_dashboard_port_falls_back_to_a_free_one():
    # Scheduler(dashboard_address=...): the convenience that attaches one when listening.
    async with Scheduler(dashboard_address="127.0.0.1:0") as first:
        await first.listen("tcp://127.0.0.1:0")
        taken = first.services["dashboard"].port
        async with Scheduler(dashboard_address=f"127.0.0.1:{taken}") as second:
            await second.listen("tcp://127.0.0.1:0")
            assert second.services["dashboard"].port not in (0, taken)


async def test_the_dashboard_listens_at_once_and_loads_on_its_first_connection():
    """Until a connection comes, only the sockets exist; the first request is answered
    once the dashboard has loaded, and later ones as usual."""
    async with Scheduler() as scheduler:
        await scheduler.listen("tcp://127.0.0.1:0")
        dashboard = await attach_dashboard(scheduler, "127.0.0.1:0")
        assert dashboard.port > 0
        assert dashboard.dashboard is None
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(dashboard.url + "/health") as response:
                    assert response.status == 200
        assert dashboard.dashboard is not None


async def test_a_dashboard_nobody_opened_closes_and_frees_its_port():
    import socket

    async with Scheduler() as scheduler:
        await scheduler.listen("tcp://127.0.0.1:0")
        dashboard = await attach_dashboard(scheduler, "127.0.0.1:0")
        port = dashboard.port
    assert dashboard.dashboard is None  # never loaded
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass


def test_closing_while_the_first_connection_loads_the_dashboard():
    """The first request waits in the backlog while the dashboard loads; closing then
    lets the load finish, and the request is answered before the dashboard closes.
    (On corral's own loop, uvloop's: asyncio's accepts a waiting connection after its
    server has been told to close, and aiohttp then never closes it.)"""
    from corral.utils import LoopRunner

    async def scenario() -> bytes:
        async with Scheduler() as scheduler:
            await scheduler.listen("tcp://127.0.0.1:0")
            dashboard = await attach_dashboard(scheduler, "127.0.0.1:0")
            reader, writer = await asyncio.open_connection("127.0.0.1", dashboard.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Connection: close\r\n\r\n")
            await wait_until(lambda: dashboard._loading is not None, 10, "loading began")
        assert dashboard.dashboard is not None  # closing let the load finish, then closed it
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        return answer

    runner = LoopRunner("closing-while-loading")
    try:
        assert runner.run(scenario(), timeout=30).startswith(b"HTTP/1.1 200 OK")
    finally:
        runner.stop()


async def test_a_dashboard_that_fails_to_load_says_so_once_and_refuses_browsers(
        monkeypatch, caplog):
    from corral.dashboard.app import Dashboard

    async def broken(self):
        raise OSError("no more file descriptors")

    monkeypatch.setattr(Dashboard, "start", broken)
    async with Scheduler() as scheduler:
        await scheduler.listen("tcp://127.0.0.1:0")
        dashboard = await attach_dashboard(scheduler, "127.0.0.1:0")
        with caplog.at_level(logging.WARNING, logger="corral.dashboard"):
            _reader, writer = await asyncio.open_connection("127.0.0.1", dashboard.port)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            await wait_until(lambda: dashboard._loading is not None and dashboard._loading.done(),
                             10, "the load ended")
        assert [r.getMessage() for r in caplog.records if r.name == "corral.dashboard"] == [
            "the dashboard failed to start: OSError: no more file descriptors"]
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", dashboard.port)


def test_a_cluster_with_a_dashboard_loads_no_web_server_until_asked():
    """What a cold start pays: a local cluster with its dashboard, one task, no browser,
    and aiohttp is never imported."""
    code = (
        "import sys\n"
        "from corral import Client, LocalCluster\n"
        "with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,\n"
        "                  dashboard_address='127.0.0.1:0') as cluster, Client(cluster) as c:\n"
        "    assert c.submit(abs, -1).result() == 1\n"
        "    assert cluster.dashboard.port > 0\n"
        "print('aiohttp' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"


def test_progress_bar_counts_every_future(client, capsys):
    futures = client.map(slow_inc, range(2000, 2030))
    progress(futures, desc="incs")
    assert all(f.done() for f in futures)
    err = capsys.readouterr().err
    assert "incs" in err
    assert "30/30" in err


def test_log_level_flag(tmp_path):
    def startup(level: str) -> str:
        ready = tmp_path / f"{level}.json"  # written once it serves, just before its INFO lines
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.cli", "scheduler", "--log-level", level, "--port",
             "0", "--dashboard-address", "none", "--no-auth", "--scheduler-file", str(ready)],
            stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_until_blocking(lambda: proc.poll() is not None or ready.exists(), 60,
                                what="the scheduler to start")
        finally:
            proc.terminate()
        return proc.communicate(timeout=20)[1]

    quiet, chatty = startup("warning"), startup("info")
    assert "AUTHENTICATION IS OFF" in quiet
    assert "scheduler at" not in quiet
    assert "corral.scheduler INFO scheduler at" in chatty


async def test_progress_is_awaited_with_an_asynchronous_client(capsys):
    async with Client(asynchronous=True, cluster_options={
            "processes": False, "dashboard_address": None}) as client:
        futures = client.map(slow_inc, range(20))
        futures.append(client.submit(fail, 1))
        await progress(futures, desc="async incs")
        assert all(f.done() for f in futures)
        assert client.dashboard_link is None  # this cluster serves no dashboard
    err = capsys.readouterr().err
    assert "21/21" in err
    assert "erred=1" in err
