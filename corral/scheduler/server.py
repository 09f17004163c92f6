"""The scheduler server: a thin asyncio shell around ``SchedulerState``.

It decodes messages from workers and clients into stimuli, feeds them to the state
machine, and turns the actions that come back into messages on one long-lived batched
stream per worker and per client. Queries (``who_has``, ``nthreads``, ...) read the
state directly. User code and data never get unpickled here: task specs, ``run``
functions and their results pass through as opaque bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from corral import config
from corral import messages as msgs
from corral.basic_types import Count
from corral.core import BatchedSend, Comm, ConnectionPool, Server, rpc
from corral.core.validate import build, checked
from corral.exceptions import CommClosedError, CommError
from corral.scheduler import events as ev
from corral.scheduler.coordination import (
    Coordination,
    HolderGone,
    Restarted,
    UnwantKeys,
    WantKeys,
)
from corral.scheduler.extras import SchedulerExtras
from corral.scheduler.moves import DataMoves
from corral.scheduler.queuing import parse_saturation
from corral.scheduler.state import SchedulerState
from corral.scheduler.timeline import Timeline
from corral.scheduler.wire import client_message, scatter_stimuli, worker_message
from corral.security import Security
from corral.versions import versions

logger = logging.getLogger("corral.scheduler")


class Service(Protocol):
    """Something served beside a scheduler (the dashboard) and closed with it."""

    @property
    def port(self) -> int: ...

    async def close(self) -> None: ...


class Scheduler:
    """Knows which worker holds which key and decides where tasks run."""

    def __init__(
        self,
        *,
        security: Security | None = None,
        name: str = "scheduler",
        tick_interval: float | None = None,
        batch_interval: float | None = None,
        worker_ttl: float | None = None,
        client_grace: float | None = None,
        worker_saturation: float | str | None = None,
        dashboard_address: str | None = None,
        dashboard_allowed_hosts: tuple[str, ...] = (),
        lease_timeout: float = 30.0,
        idle_timeout: float | None = None,
        **state_options: Any,
    ) -> None:
        self.security = security
        # Close once no client has been connected and no task running for this long.
        self.idle_timeout = idle_timeout
        self._idle_since: float | None = None
        self._closed = asyncio.Event()
        # A convenience for code that builds a Scheduler itself (corral.deploy.dashboard
        # does the work): serve the dashboard there once listening; None: nowhere.
        self._dashboard_options = (
            None if dashboard_address is None else (dashboard_address, dashboard_allowed_hosts)
        )
        # Served beside the scheduler (the dashboard), by name: closed with it, and each
        # one's port told to clients under its name.
        self.services: dict[str, Service] = {}
        self.timeline = Timeline()
        # Unset knobs come from corral.config (scheduler.*), read once, here.
        worker_ttl = config.fallback(worker_ttl, "scheduler.worker-ttl")
        client_grace = config.fallback(client_grace, "scheduler.client-grace")
        state_options.setdefault("allowed_failures", config.get("scheduler.allowed-failures"))
        # Checked here, so that a bad setting stops the scheduler before it listens.
        state_options["worker_saturation"] = parse_saturation(
            config.fallback(worker_saturation, "scheduler.worker-saturation"))
        # A worker silent for this long is dead, whether or not its connection closed.
        self.worker_ttl = worker_ttl
        # A client whose connection drops keeps its keys this long, to reconnect.
        self.client_grace = client_grace
        self._closing_clients: set[str] = set()
        self._closing_streams: set[asyncio.Future[None]] = set()  # retired workers'
        # Both are decided by the state machine, from the times stamped on stimuli here.
        state_options.setdefault("inline_result_bytes",
                                 config.fallback(None, "scheduler.inline-result-bytes"))
        self.state = SchedulerState(worker_ttl=worker_ttl, client_grace=client_grace,
                                    **state_options)
        self.tick_interval: float = config.fallback(tick_interval, "scheduler.tick-interval")
        self.batch_interval: float = config.fallback(batch_interval, "scheduler.batch-interval")
        # Locks, queues, variables...: their own state machine, beside the tasks'.
        self.coordination = Coordination(lease_timeout=lease_timeout)
        self.extras = SchedulerExtras(self)  # more queries; worker plugins kept for joiners
        self.moves = DataMoves(self)  # retire_workers, replicate
        self.server = Server(
            {
                "register-worker": self.register_worker,
                "register-client": self.register_client,
                "who_has": self.who_has,
                "has_what": self.has_what,
                "nthreads": self.nthreads,
                "scheduler_info": self.scheduler_info,
                "broadcast": self.broadcast,
                "restart": self.restart,
                "identity": self.identity,
                **self.extras.handlers(),
                **self.moves.handlers(),
            },
            security=security,
            name=name,
            role="scheduler",
        )
        self.worker_streams: dict[str, BatchedSend] = {}
        self.client_streams: dict[str, BatchedSend] = {}
        self.worker_info: dict[str, dict[str, Any]] = {}  # name, pid, last heartbeat metrics
        self.pool = ConnectionPool(security=security, name=name)
        self._ticker: asyncio.Task[None] | None = None
        self.id = f"scheduler-{uuid.uuid4().hex[:8]}"
        # Ids of the stimuli the scheduler makes itself, and of older peers' messages sent
        # without one.
        self._ids = msgs.StimulusIds(self.id)

    # -- lifecycle -------------------------------------------------------------------

    async def listen(self, address: str | int = "tcp://127.0.0.1:0") -> None:
        await self.server.listen(address)
        self.extras.logs.attach()
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick_forever())
        if self._dashboard_options is not None and "dashboard" not in self.services:
            from corral.deploy.dashboard import attach_dashboard  # the deploy layer's job

            address, allowed_hosts = self._dashboard_options
            await attach_dashboard(self, address, allowed_hosts=allowed_hosts)
        logger.info("scheduler at %s", self.address)

    def attach(self, name: str, service: Service) -> None:
        """Keep ``service`` (started) beside this scheduler until it closes; clients that
        register are told its port under ``name``."""
        if name in self.services:
            raise ValueError(f"a service named {name!r} is already attached")
        self.services[name] = service

    @property
    def address(self) -> str:
        return self.server.address

    async def close(self) -> None:
        self._closed.set()
        self.extras.logs.detach()
        if self._ticker is not None and self._ticker is not asyncio.current_task():
            self._ticker.cancel()
        for service in self.services.values():
            await service.close()
        for stream in list(self.worker_streams.values()) + list(self.client_streams.values()):
            stream.abort()
        await self.server.close()
        await self.pool.close()

    async def finished(self) -> None:
        """Wait until the scheduler has closed (e.g. after ``idle_timeout``)."""
        await self._closed.wait()

    async def __aenter__(self) -> Scheduler:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the state machine -----------------------------------------------------------

    def handle(self, *stimuli: ev.Stimulus) -> None:
        """Feed stimuli to the state machine and carry out its actions."""
        notices: dict[str, list[ev.Notice]] = {}
        for action in self.state.handle(*stimuli):
            if isinstance(action, ev.Notice):  # one line for all of a kind, not one per key
                notices.setdefault(action.event, []).append(action)
            else:
                self._carry_out(action)
        for event, same in notices.items():
            keys = [n.key for n in same]
            shown = ", ".join(map(repr, keys[:5])) + (f" and {len(keys) - 5} more"
                                                      if len(keys) > 5 else "")
            if event == "key-lost":
                logger.warning("lost the last copy of %d key(s): %s; recomputing those "
                               "still needed", len(keys), shown)
            else:
                logger.warning("%s %s: %s", event, shown, same[0].detail)

    def _carry_out(self, action: ev.Action) -> None:
        if isinstance(action, msgs.ToWorker):
            self._to_worker(action)
        elif isinstance(action, msgs.ToClient):
            self._to_client(action)
        elif isinstance(action, ev.RecordTaskRun):
            if action.erred:
                self.timeline.task_erred(action.key, action.name, action.worker, action.start,
                                         action.stop)
            else:
                self.timeline.task_finished(action.key, action.name, action.worker,
                                            action.start, action.stop, action.nbytes)
        elif isinstance(action, ev.DropWorker):
            self._drop_worker(action.worker, action.reason, action.stimulus_id,
                              graceful=action.graceful)
        elif isinstance(action, ev.RetirementRefused):
            logger.warning("not retiring worker %s: %s", action.worker, action.reason)
        elif isinstance(action, ev.DropClient):
            logger.info("client %s removed: %s", action.client, action.reason)
        else:  # pragma: no cover - a new kind of action the server does not know yet
            raise TypeError(f"unknown action {action!r}")

    def coordinate(self, *stimuli: msgs.Event) -> None:
        """Feed stimuli to the coordination machine and carry out its actions: replies
        to clients, and keys held or let go (as the task state machine's client wants)."""
        try:
            actions = self.coordination.handle(*stimuli)
        except Exception:  # a bug there must not stop the ticks or drop a client's stream
            logger.exception("coordination failed on %s", [type(s).__name__ for s in stimuli])
            return
        for action in actions:
            if isinstance(action, msgs.CoordinationReply):
                self._to_client(action)
            elif isinstance(action, WantKeys):
                self.handle(ev.ClientDesiresKeys(stimulus_id=action.stimulus_id,
                                                 client=action.client, keys=action.keys))
            elif isinstance(action, UnwantKeys):
                self.handle(ev.ClientReleasesKeys(stimulus_id=action.stimulus_id,
                                                  client=action.client, keys=action.keys))

    def _to_worker(self, msg: msgs.ToWorker) -> None:
        stream = self.worker_streams.get(msg.worker)
        if stream is not None:
            with contextlib.suppress(CommClosedError):
                stream.send(msg.to_wire())

    def _to_client(self, msg: msgs.ToClient) -> None:
        stream = self.client_streams.get(msg.client)
        if stream is not None:
            with contextlib.suppress(CommClosedError):
                stream.send(msg.to_wire())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            now = time.time()
            tick = ev.Tick(stimulus_id=self._ids(), now=now)
            self.handle(tick)
            self.coordinate(tick)
            if self.idle_timeout is not None and self._idle_for(now) > self.idle_timeout:
                logger.info("idle for %s s (no client, no task running): closing",
                            self.idle_timeout)
                await self.close()
                return

    def _idle_for(self, now: float) -> float:
        """Seconds with no client connected and no task on any worker."""
        if self.client_streams or any(ws.processing for ws in self.state.workers.values()):
            self._idle_since = None
            return 0.0
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since

    # -- streams -----------------------------------------------------------------------

    @checked
    async def register_worker(
        self,
        comm: Comm,
        address: str,
        nthreads: int,
        memory_limit: int = 0,
        resources: dict[str, float] | None = None,
        name: str = "",
        pid: Count = 0,
        nanny: str | None = None,
    ) -> None:
        # Every field is checked (here, and as an AddWorker) before anything is recorded:
        # a refused registration leaves no trace.
        added = build(ev.AddWorker, {
            "stimulus_id": self._ids(), "address": address,
            "nthreads": nthreads, "memory_limit": memory_limit, "resources": resources or {},
            "name": name, "now": time.time()})
        if address in self.worker_streams:  # the same worker again, e.g. after a reconnect
            self._remove_worker(address, "re-registered")
        await comm.write({"status": "OK", "scheduler": self.id})
        stream = BatchedSend(self.batch_interval, name=f"to {address}")
        stream.start(comm)
        self.extras.worker_joined(address, stream, added.stimulus_id)
        self.worker_streams[address] = stream
        self.worker_info[address] = {"name": name or address, "pid": pid, "nanny": nanny,
                                     "metrics": {}, "last_seen": time.time()}
        self.handle(added)
        logger.info("worker %s joined (%d threads)", address, nthreads)
        try:
            await self._read_stream(comm, lambda msg: self._from_worker(address, msg))
        finally:
            if self.worker_streams.get(address) is stream:
                self._remove_worker(address, "connection closed")

    def _from_worker(self, address: str, msg: dict[str, Any]) -> None:
        info = self.worker_info[address]
        info["last_seen"] = time.time()  # for display: liveness is the state machine's
        stimulus = worker_message(address, msg, self._ids)
        if stimulus is not None:
            self._serve(stimulus)  # the task stream hears of results from RecordTaskRun

    def _serve(self, message: msgs.FromWorker | msgs.FromClient) -> None:
        """A message off a stream: the server's own business (``OWN_MESSAGES``), or else
        a stimulus for the state machine."""
        own = self.OWN_MESSAGES.get(type(message))
        if own is not None:
            own(self, message)
        elif isinstance(message, msgs.CoordinationStimulus):
            self.coordinate(message)
        else:
            assert isinstance(message, ev.Stimulus), message  # tests/test_messages.py
            self.handle(message)

    def _on_heartbeat(self, msg: msgs.Heartbeat) -> None:
        info = self.worker_info[msg.worker]
        info["metrics"] = msg.metrics
        info["memory"] = {"managed": msg.managed, "spilled": msg.spilled,
                          "spilled_disk": msg.spilled_disk, "unmanaged": msg.unmanaged,
                          "paused": msg.paused}
        # The answer proves the link both ways.
        self._to_worker(msgs.HeartbeatAck(stimulus_id=msg.stimulus_id, worker=msg.worker))
        for peer, start, stop, nbytes in msg.transfers[:1000]:
            self.timeline.transfer(msg.worker, peer, start, stop, nbytes)
        self.handle(ev.WorkerHeartbeat(stimulus_id=msg.stimulus_id, worker=msg.worker,
                                       now=time.time()))

    def _remove_worker(self, address: str, reason: str) -> None:
        stimulus_id = self._ids()
        self.handle(ev.RemoveWorker(stimulus_id=stimulus_id, address=address, reason=reason))
        self._drop_worker(address, reason, stimulus_id)  # if the state machine did not know it

    def _drop_worker(self, address: str, reason: str, stimulus_id: str,
                     graceful: bool = False) -> None:
        """Close the stream to a removed worker and tell its peers it is gone; a retired
        worker's stream first delivers what is queued for it (``CloseWorker``)."""
        stream = self.worker_streams.pop(address, None)
        info = self.worker_info.pop(address, None)
        if stream is None and info is None:
            return  # already dropped
        if stream is not None and graceful:
            closing = asyncio.ensure_future(stream.close(timeout=5))
            self._closing_streams.add(closing)
            closing.add_done_callback(self._closing_streams.discard)
        elif stream is not None:
            stream.abort()
        gone = msgs.RemoveWorkerPeer(stimulus_id=stimulus_id, peer=address).to_wire()
        for other in self.worker_streams.values():
            with contextlib.suppress(CommClosedError):
                other.send(gone)
        logger.info("worker %s left: %s", address, reason)

    @checked
    async def register_client(self, comm: Comm, client: str) -> None:
        self.handle(ev.ClientConnected(stimulus_id=self._ids(), client=client, now=time.time()))
        old = self.client_streams.pop(client, None)
        if old is not None:
            old.abort()
        ports = {name: service.port for name, service in self.services.items()}
        await comm.write({"status": "OK", "scheduler": self.id, **ports})
        stream = BatchedSend(self.batch_interval, name=f"to {client}")
        stream.start(comm)
        self.client_streams[client] = stream
        logger.info("client %s connected", client)
        try:
            await self._read_stream(comm, lambda msg: self._from_client(client, msg))
        finally:
            if self.client_streams.get(client) is stream:
                del self.client_streams[client]
                stream.abort()
            if client not in self.client_streams:  # its leases and waits end now
                self.coordinate(HolderGone(stimulus_id=self._ids(), client=client))
            if client in self._closing_clients:  # said goodbye: nothing to keep
                self._closing_clients.discard(client)
                if client not in self.client_streams:
                    self.handle(ev.RemoveClient(stimulus_id=self._ids(), client=client))
            elif client not in self.client_streams:
                logger.info("client %s disconnected; releasing its keys in %s s unless it "
                            "reconnects", client, self.client_grace)
                self.handle(ev.ClientDisconnected(stimulus_id=self._ids(), client=client,
                                                  now=time.time()))

    def _from_client(self, client: str, msg: dict[str, Any]) -> None:
        message = client_message(client, msg, self._ids, now=time.time())
        if message is not None:
            self._serve(message)
            if isinstance(message, msgs.UpdateGraph):
                self.extras.work_arrived()  # adaptive scaling need not wait for its round

    def _on_close_client(self, msg: msgs.CloseClient) -> None:
        self._closing_clients.add(msg.client)  # said goodbye: release its keys at once

    def _on_scatter(self, msg: msgs.Scatter) -> None:
        self.handle(*scatter_stimuli(msg))

    # The messages the server acts on itself; all others that it reads are stimuli.
    OWN_MESSAGES: ClassVar[dict[type[msgs.Message], Callable[[Any, Any], None]]] = {
        msgs.Heartbeat: _on_heartbeat, msgs.CloseClient: _on_close_client,
        msgs.Scatter: _on_scatter,
    }

    async def _read_stream(self, comm: Comm, on_message: Any) -> None:
        """Read batches from a long-lived stream until it closes; one bad message is skipped."""
        while True:
            try:
                batch = await comm.read()
            except CommError:
                return
            except Exception as e:  # undecodable batch from an authenticated peer
                logger.warning("dropping a batch from %s: %s", comm.peer_address, e)
                continue
            if not isinstance(batch, list):
                batch = [batch]
            for msg in batch:
                if not isinstance(msg, dict):
                    logger.warning("ignoring a non-dict message from %s", comm.peer_address)
                    continue
                try:
                    on_message(msg)
                except Exception:
                    logger.exception("error handling %r from %s", msg.get("op"), comm.peer_address)

    # -- queries -------------------------------------------------------------------------

    def who_has(self, comm: Comm, keys: list[Any] | None = None) -> dict[Any, list[str]]:
        return self.state.who_has(keys)

    def has_what(self, comm: Comm, workers: list[str] | None = None) -> dict[str, list[Any]]:
        has_what = self.state.has_what()
        return has_what if workers is None else {w: has_what.get(w, []) for w in workers}

    def nthreads(self, comm: Comm) -> dict[str, int]:
        return self.state.nthreads()

    def identity(self, comm: Comm) -> dict[str, Any]:
        return {"type": "Scheduler", "id": self.id, "address": self.address}

    def scheduler_info(self, comm: Comm) -> dict[str, Any]:
        info = self.state.info()
        workers = info.setdefault("workers", {})
        for address, extra in self.worker_info.items():
            workers.setdefault(address, {}).update(
                name=extra["name"], pid=extra["pid"], nanny=extra["nanny"],
                metrics=extra.get("metrics", {}), memory=extra.get("memory", {}),
            )
        info.update(type="Scheduler", id=self.id, address=self.address, versions=versions())
        return info

    async def broadcast(
        self, comm: Comm, msg: dict[str, Any], workers: list[str] | None = None
    ) -> dict[str, Any]:
        """Send ``msg`` to workers and collect their replies (opaque to the scheduler)."""
        targets = list(self.worker_streams) if workers is None else list(workers)
        unknown = [w for w in targets if w not in self.worker_streams]
        if unknown:
            raise ValueError(f"not workers of this scheduler: {unknown}")

        async def one(address: str) -> Any:
            try:
                return await self.pool(address).__getattr__(msg["op"])(
                    **{k: v for k, v in msg.items() if k != "op"}
                )
            except CommError as e:
                return {"status": "error", "exception": None, "exception_text": repr(e),
                        "traceback_text": ""}

        results = await asyncio.gather(*(one(w) for w in targets))
        return dict(zip(targets, results, strict=True))

    async def _restart_through(self, nanny: str, timeout: float) -> None:
        # A comm of its own, closed after: restarts are rare, pooling them would keep
        # one idle connection per nanny open for the scheduler's whole life.
        async with rpc(nanny, security=self.security) as r:
            await r.restart(timeout=timeout)

    async def restart(self, comm: Comm, timeout: float = 60.0) -> str:
        """Forget every task; nannies replace their worker processes, bare workers reset."""
        stimulus_id = self._ids()
        for client, owned in list(self.state.client_keys.items()):
            keys = tuple(ts.key for ts in owned)
            for key in keys:  # finished ones too (CancelKeys tells of unfinished ones)
                self._to_client(msgs.ReportCancelled(
                    stimulus_id=stimulus_id, client=client, key=key,
                    reason="restarted: the cluster was restarted; its results are gone"))
            self.handle(ev.CancelKeys(stimulus_id=stimulus_id, client=client, keys=keys))
        self.coordinate(Restarted(stimulus_id=stimulus_id))  # values holding futures go too
        expected = len(self.worker_streams)
        nannies = [info["nanny"] for info in self.worker_info.values() if info.get("nanny")]
        bare = [a for a, info in self.worker_info.items() if not info.get("nanny")]
        async with asyncio.timeout(timeout):
            await asyncio.gather(
                *(self._restart_through(nanny, timeout) for nanny in nannies),
                self.broadcast(comm, {"op": "reset"}, workers=bare),
            )
            while len(self.worker_streams) < expected:  # noqa: ASYNC110 - workers rejoining
                await asyncio.sleep(0.05)
        return "OK"
