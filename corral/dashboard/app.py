"""The web dashboard: aiohttp on the scheduler's own event loop.

Pages are static files that draw what ``/ws`` pushes: one snapshot of the state
every ``interval`` seconds, computed once for all watchers and only while someone
watches. ``/api/*`` serves the same views on request, ``/metrics`` Prometheus text,
``/health`` a liveness answer. Nothing here changes cluster state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from corral.dashboard import access, listen, snapshot
from corral.dashboard.metrics import registry_for
from corral.refusals import RefusalLog

if TYPE_CHECKING:
    from corral.scheduler.view import SchedulerView
    from corral.security import Security

logger = logging.getLogger("corral.dashboard")

STATIC = Path(__file__).parent / "static"
PAGES = {"/status": "status.html", "/workers": "workers.html", "/task": "task.html",
         "/graph": "graph.html"}
OPEN_PATHS = ("/health", "/login")  # everything else needs the token, when there is one
BACKLOG = 2000  # task-stream records a page gets when it connects
SEND_TIMEOUT = 5.0  # a watcher that cannot take a snapshot this fast is dropped


class Dashboard:
    """Serves on ``sockets`` (``listen.bind(host, port)``: listening already), which
    stay its caller's to close."""

    def __init__(self, scheduler: SchedulerView, sockets: list[socket.socket], host: str, *,
                 interval: float = 0.5, allowed_hosts: tuple[str, ...] = (),
                 session_lifetime: float | None = None) -> None:
        self.scheduler = scheduler
        # How long a login lasts, in seconds (default: access.session_lifetime(), 12 h).
        self.session_lifetime = session_lifetime or access.session_lifetime()
        self.sockets, self.host = sockets, host
        self.interval = interval
        self.allowed = access.allowed_hosts(self.host, allowed_hosts)
        self.registry = registry_for(scheduler)
        self.port = sockets[0].getsockname()[1]
        self._runner: web.AppRunner | None = None
        self._watchers: set[web.WebSocketResponse] = set()
        self._publisher: asyncio.Task[None] | None = None
        self._seq = 0  # last timeline record pushed to watchers
        self.refusals = RefusalLog(logger, "dashboard requests")

    @property
    def security(self) -> Security | None:
        return self.scheduler.security

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._root)
        app.router.add_get("/login", self._login)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ws", self._websocket)
        for path in PAGES:
            app.router.add_get(path, self._page)
        app.router.add_static("/static", STATIC)
        for name, view in (("summary", self._api_summary), ("workers", self._api_workers),
                           ("tasks", self._api_tasks), ("task", self._api_task),
                           ("progress", self._api_progress), ("stream", self._api_stream),
                           ("graph", self._api_graph)):
            app.router.add_get(f"/api/{name}", view)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     logger=_AiohttpLog(self.refusals))
        await self._runner.setup()
        for sock in self.sockets:
            await web.SockSite(self._runner, sock).start()

    async def close(self) -> None:
        self.refusals.close()
        if self._publisher is not None:
            self._publisher.cancel()
        for ws in list(self._watchers):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return listen.url(self.host, self.port)

    # -- guard: Host header, then token ---------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        host = access.host_name(request.headers.get("Host", ""))
        if host not in self.allowed:
            self.refusals.refuse("foreign Host", "refused a dashboard request for Host %r (not "
                                 "this dashboard's address; DNS rebinding?)", host)
            return web.Response(status=403, text=f"refused: {host!r} is not an address this "
                                                 "dashboard serves\n")
        if request.path in OPEN_PATHS or access.authorized(
            self.security, request.cookies.get(access.COOKIE),
            request.headers.get("Authorization"),
        ):
            return await handler(request)
        return web.Response(
            status=401, content_type="text/plain",
            text="This cluster's dashboard needs its token. Open the link that "
                 "client.dashboard_link gives (…/login?token=…), or send "
                 "'Authorization: Bearer TOKEN'.\n",
        )

    async def _login(self, request: web.Request) -> web.Response:
        if self.security is None or self.security.token is None:
            raise web.HTTPFound("/status")
        if not self.security.authorize_http(request.query.get("token")):
            self.refusals.refuse("wrong token", "refused a dashboard login with a wrong token")
            return web.Response(status=401, text="wrong or missing token\n")
        response = web.HTTPFound("/status")
        lifetime = self.session_lifetime
        response.set_cookie(access.COOKIE,
                            access.session_value(self.security, time.time() + lifetime) or "",
                            max_age=int(lifetime), httponly=True, samesite="Strict", path="/")
        raise response

    # -- pages and plain endpoints ----------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/status")

    async def _page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / PAGES[request.path])

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- JSON API ---------------------------------------------------------------------

    async def _api_summary(self, request: web.Request) -> web.Response:
        return _json(snapshot.summary(self.scheduler.state, self.scheduler.timeline))

    async def _api_workers(self, request: web.Request) -> web.Response:
        sched = self.scheduler
        return _json(snapshot.workers(sched.state, sched.worker_info, time.time()))

    async def _api_tasks(self, request: web.Request) -> web.Response:
        status = request.query.get("state")
        if status is not None and status not in snapshot.STATES:
            raise web.HTTPBadRequest(text=f"state must be one of {', '.join(snapshot.STATES)}")
        limit = _int_query(request, "limit", 1000)
        return _json(snapshot.tasks(self.scheduler.state, status, limit))

    async def _api_task(self, request: web.Request) -> web.Response:
        key = request.query.get("key")
        if key is None:
            raise web.HTTPBadRequest(text="give ?key=")
        detail = snapshot.task_detail(self.scheduler.state, key)
        if detail is None:
            raise web.HTTPNotFound(text=f"no task {key!r} (finished and forgotten, or never "
                                        "submitted)")
        return _json(detail)

    async def _api_progress(self, request: web.Request) -> web.Response:
        return _json(snapshot.progress(self.scheduler.state, self.scheduler.timeline))

    async def _api_stream(self, request: web.Request) -> web.Response:
        seq, records = self.scheduler.timeline.since(_int_query(request, "since", 0))
        return _json({"seq": seq, "records": snapshot.records(records)})

    async def _api_graph(self, request: web.Request) -> web.Response:
        return _json(snapshot.graph(self.scheduler.state, _int_query(request, "limit", 500)))

    # -- live updates -------------------------------------------------------------------

    def _snapshot(self, since: int) -> tuple[int, dict[str, Any]]:
        sched = self.scheduler
        seq, records = sched.timeline.since(since)
        return seq, {
            "time": time.time(),
            "summary": snapshot.summary(sched.state, sched.timeline),
            "workers": snapshot.workers(sched.state, sched.worker_info, time.time()),
            "progress": snapshot.progress(sched.state, sched.timeline),
            "stream": snapshot.records(records[-BACKLOG:]),
        }

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        origin = request.headers.get("Origin")
        if origin and access.host_name(urlsplit(origin).netloc) not in self.allowed:
            raise web.HTTPForbidden(text="refused: cross-origin websocket")
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        _, first = self._snapshot(max(self.scheduler.timeline.seq - BACKLOG, 0))
        await ws.send_str(json.dumps(first))
        self._watchers.add(ws)
        if self._publisher is None or self._publisher.done():
            self._seq = self.scheduler.timeline.seq
            self._publisher = asyncio.ensure_future(self._publish())
        try:
            async for msg in ws:  # pages send nothing; this waits for the close
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._watchers.discard(ws)
        return ws

    async def _publish(self) -> None:
        while self._watchers:
            await asyncio.sleep(self.interval)
            self._seq, update = self._snapshot(self._seq)
            text = json.dumps(update)
            watchers = list(self._watchers)
            sent = await asyncio.gather(*(_send(ws, text) for ws in watchers))
            for ws, ok in zip(watchers, sent, strict=True):
                if not ok:
                    self._watchers.discard(ws)
                    await ws.close()


class _AiohttpLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What aiohttp's request handler logs, made one line per refusal: a malformed request
    is the client's mistake (no traceback), and a flood of them is summarised."""

    def __init__(self, refusals: RefusalLog) -> None:
        super().__init__(logging.getLogger("corral.dashboard"), {})
        self.refusals = refusals

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None,
            **kwargs: Any) -> None:
        if level < logging.WARNING:
            return  # aiohttp's debug chatter (e.g. a first request that is not HTTP)
        error = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(error, HttpProcessingError):
            reason = " ".join(str(error.message).split())[:200]
            self.refusals.refuse(type(error).__name__, "refused a malformed dashboard request: "
                                 "%s: %s", type(error).__name__, reason)
            return
        text = str(msg) % args if args else str(msg)
        self.refusals.refuse("handler error", "dashboard: %s", text, level=level,
                             exc_info=exc_info)  # a bug of ours: keep its traceback


async def _send(ws: web.WebSocketResponse, text: str) -> bool:
    with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
        async with asyncio.timeout(SEND_TIMEOUT):
            await ws.send_str(text)
        return True
    return False


def _json(value: Any) -> web.Response:
    return web.Response(text=json.dumps(value), content_type="application/json")


def _int_query(request: web.Request, name: str, default: int) -> int:
    try:
        return max(int(request.query.get(name, default)), 0)
    except ValueError:
        raise web.HTTPBadRequest(text=f"?{name}= must be an integer") from None
