"""The worker server: a thin asyncio shell around ``WorkerState``.

It holds the data (key → value), runs tasks on its threads, fetches inputs directly
from peer workers, serves its data to peers and clients (``corral.worker.serving``),
and keeps one batched stream to the scheduler. Every decision — what to run next, what
to fetch from whom, what to tell the scheduler — comes from the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from corral import config, runspec
from corral import messages as msgs
from corral.core import BatchedSend, Comm, ConnectionPool, Server, connect, rpc
from corral.exceptions import (
    CommClosedError,
    CommError,
    ConnectTimeoutError,
    InvalidMessage,
)
from corral.memory_limit import configured_thresholds, parse_memory_limit
from corral.security import Security
from corral.sizeof import sizeof
from corral.worker import context, shared_results
from corral.worker import events as ev
from corral.worker.lifecycle import Lifecycle
from corral.worker.memory_watch import MemoryWatch
from corral.worker.plugins import WorkerExtras
from corral.worker.reconnect import FATAL, Retry, describe
from corral.worker.runner import Outcome, TaskRunner
from corral.worker.serving import Serving, pickle_exception, pickle_small
from corral.worker.shuffle import ShuffleExtension
from corral.worker.spill import SpillBuffer
from corral.worker.state import WorkerState
from corral.worker.thresholds import Thresholds

logger = logging.getLogger("corral.worker")

class Worker:
    """Runs tasks and serves the data it holds."""

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int | None = None,
        name: str = "",
        memory_limit: int | str | None = 0,
        memory_thresholds: Thresholds | None = None,
        memory_monitor_interval: float | None = None,
        resources: dict[str, float] | None = None,
        security: Security | None = None,
        heartbeat_interval: float | None = None,
        batch_interval: float | None = None,
        scheduler_timeout: float | None = None,
        death_timeout: float | None = None,
        nanny: str | None = None,
        contact_address: str | None = None,
        preload: Sequence[str] = (),
        lifetime: float | None = None,
        lifetime_stagger: float = 0.0,
        local_directory: str | None = None,
    ) -> None:
        self.scheduler_address = scheduler_address
        self.nthreads = nthreads or os.cpu_count() or 1
        self.name = name
        # Data beyond the thresholds' fractions of it spills, then pauses (docs/memory.md).
        self.memory_limit = parse_memory_limit(memory_limit, share=1.0)
        self.thresholds = memory_thresholds or configured_thresholds()
        self.memory_monitor_interval: float = config.fallback(memory_monitor_interval,
                                                              "worker.memory.monitor-interval")
        self.resources = dict(resources or {})
        self.security = security
        # Unset knobs come from corral.config (worker.*).
        self.heartbeat_interval: float = config.fallback(heartbeat_interval,
                                                         "worker.heartbeat-interval")
        self.batch_interval: float = config.fallback(batch_interval, "worker.batch-interval")
        # Silence from the scheduler for this long means a dead link (no FIN may come).
        self.scheduler_timeout: float = config.fallback(scheduler_timeout,
                                                        "worker.scheduler-timeout")
        # How long to keep trying to reach the scheduler before giving up (None: forever).
        self.death_timeout = death_timeout
        self.gave_up: str | None = None  # why the worker gave up on its scheduler, if it did
        self.retired = False  # the scheduler closed it, its data safe elsewhere
        self._closing: asyncio.Future[None] | None = None
        # Its own scratch directory, made under this one (worker.local-directory; None: the
        # system's temporary directory) when it starts, removed when it closes.
        self._local_parent: str | None = config.fallback(local_directory,
                                                         "worker.local-directory")
        self.local_directory = ""
        self.nanny = nanny
        # Where peers and the scheduler reach it, if not where it listens (NAT, containers).
        self.contact_address = contact_address
        self.lifecycle = Lifecycle(preload, lifetime, lifetime_stagger)
        self.data: dict[Any, Any] | SpillBuffer = {}  # a SpillBuffer once started, with a limit
        self.service = Serving(self)  # its data to peers, client.run, reset, identity
        self.extras = WorkerExtras(self)  # plugins, uploaded files, the log ring
        self.shuffles = ShuffleExtension(self)  # pieces of p2p shuffles (corral.shuffle)
        self.server = Server(
            {
                **self.service.handlers(),
                **self.extras.handlers(),
                **self.shuffles.handlers(),
            },
            security=security,
            name=name,
            role="worker",
            shared_memory=True,  # large values to peers on this host: corral.comm.shm
        )
        self.pool = ConnectionPool(security=security, name=name)
        self.batched = BatchedSend(self.batch_interval, name="to scheduler")
        self.state: WorkerState | None = None
        self._ids: msgs.StimulusIds | None = None  # "<address>-<n>" once listening
        self._runner: TaskRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._gathers: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self.memory = MemoryWatch(self)
        self._fetched: set[Any] = set()  # keys that came from peers, for the stats below
        # Results measured (sizeof) and, if small, pickled by their task's thread.
        self._measured: dict[Any, tuple[int, bytes | None]] = {}
        # Start reports of running tasks, in case they are still queued when the task
        # ends: its result then says it ran, and the report is taken back (one message
        # fewer for the scheduler to read for every short task).
        self._start_reports: dict[Any, dict[str, Any]] = {}
        self.stats = {"fetched_bytes": 0, "fetched_keys": 0, "local_input_bytes": 0}
        # Transfers since the last heartbeat, (peer, start, stop, nbytes), for the task stream.
        self._transfer_log: deque[tuple[str, float, float, int]] = deque(maxlen=1000)
        self._heartbeat_sent = 0.0
        self.latency = 0.0  # heartbeat round trip through both batched streams, seconds
        self.loop: asyncio.AbstractEventLoop | None = None
        self.resume_events: dict[Any, threading.Event] = {}  # seceded tasks in rejoin()
        self.client: Any = None  # the Client tasks here share (corral.get_client())
        self.client_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, address: str | int = "tcp://127.0.0.1:0") -> None:
        """Listen, tell the nanny (if any), register with the scheduler, and start serving.

        Waits for the scheduler as long as it takes, or up to ``death_timeout`` seconds.
        """
        self.memory.check_limit()
        await self.server.listen(address)
        self.local_directory = tempfile.mkdtemp(prefix="corral-worker-", dir=self._local_parent)
        self.data = self.memory.new_store(self.local_directory)  # spills go under it
        self.shuffles.start(self.local_directory, self.memory_limit)
        self.extras.start()
        self.loop = asyncio.get_running_loop()
        self._ids = msgs.StimulusIds(self.address)
        self._start_afresh()
        await self.lifecycle.start(self)
        if self.nanny:  # at once: reaching the scheduler may take any time
            async with rpc(self.nanny, security=self.security, timeout=10) as nanny:
                await nanny.__getattr__("worker-started")(address=self.address, pid=os.getpid())
        comm = await self._reach_scheduler()
        self._spawn(self._scheduler_link(comm))
        self._spawn(self._heartbeat())
        self._spawn(self.lifecycle.retire_in_time(self))
        if self.memory_limit:
            self._spawn(self.memory.monitor())
        context.running.append(self)
        logger.info("worker at %s, %d threads, scheduler %s", self.address, self.nthreads,
                    self.scheduler_address)

    def _start_afresh(self) -> None:
        """Empty state, data and threads: how a worker starts, and rejoins after a loss."""
        if self._runner is not None:
            self._runner.shutdown()  # running tasks finish; their outcomes are dropped
        self._resume_all()
        for task in self._gathers:
            task.cancel()
        self.data.clear()
        self.shuffles.forget_all()
        self._fetched.clear()
        self.state = WorkerState(self.address, self.nthreads, resources=self.resources,
                                 memory_limit=self.memory_limit, thresholds=self.thresholds)
        runner: TaskRunner | None = None

        def on_outcomes(outcomes: list[Outcome]) -> None:
            if runner is self._runner:
                self._on_outcomes(outcomes)

        runner = self._runner = TaskRunner(
            self.nthreads, asyncio.get_running_loop(), on_outcomes
        )

    async def _reach_scheduler(self) -> Comm:
        """Register, trying again and again (``reconnect.Retry``) until it works.

        Gives up, saying why in one line, on refused credentials or once ``death_timeout``
        has passed: raises ``ConnectTimeoutError`` or the ``HandshakeError``.
        """
        address = self.scheduler_address
        retry = Retry(self.death_timeout, time.monotonic())
        cause = "no time to try"
        until = ("until stopped" if self.death_timeout is None
                 else f"for up to {self.death_timeout:g} s (its death timeout)")
        while (window := retry.window(time.monotonic())) is not None:
            try:
                return await self._register(timeout=window)
            except FATAL as e:
                self.gave_up = f"the scheduler at {address} refused this worker: {e}"
                logger.error("%s", self.gave_up)
                raise
            except (CommError, TimeoutError, RuntimeError) as e:
                cause = describe(e)
            if retry.failed(time.monotonic(), cause):
                logger.warning("cannot reach the scheduler at %s: %s; retrying %s",
                               address, cause, until)
            else:
                logger.debug("attempt %d to reach %s failed: %s", retry.attempts, address, cause)
        self.gave_up = (f"giving up on the scheduler at {address}: unreachable for "
                        f"{self.death_timeout:g} s (its death timeout); last: {cause}")
        logger.error("%s", self.gave_up)
        raise ConnectTimeoutError(self.gave_up)

    async def _register(self, timeout: float) -> Comm:
        """One attempt: connect to the scheduler within ``timeout`` and register."""
        comm = await connect(
            self.scheduler_address, timeout=timeout, security=self.security, role="worker",
            name=self.name,
        )
        try:
            await comm.write(
                {
                    "op": "register-worker",
                    "address": self.address,
                    "nthreads": self.nthreads,
                    "memory_limit": self.memory_limit,
                    "resources": self.resources,
                    "name": self.name or self.address,
                    "pid": os.getpid(),
                    "nanny": self.nanny,
                }
            )
            reply = await asyncio.wait_for(comm.read(), timeout=max(timeout, 10))
            if not isinstance(reply, dict) or reply.get("status") != "OK":
                raise RuntimeError(f"scheduler refused registration: {reply!r}")
        except BaseException:
            comm.abort()  # a failed attempt leaves no connection behind
            raise
        self.batched = BatchedSend(self.batch_interval, name="to scheduler")
        self.batched.start(comm)
        self._start_reports.clear()
        return comm

    async def _scheduler_link(self, comm: Comm) -> None:
        """Read the scheduler's stream; when it is lost, start afresh and rejoin."""
        while True:
            await self._read_scheduler(comm)
            self.batched.abort()
            if self._closed.is_set():
                return
            logger.warning("lost the scheduler at %s; dropping all state and data, and "
                           "reconnecting", self.scheduler_address)
            self._start_afresh()
            try:
                comm = await self._reach_scheduler()
            except CommError:  # it said why
                self._spawn(self.close())
                return
            logger.info("rejoined the scheduler at %s", self.scheduler_address)

    @property
    def address(self) -> str:
        return self.contact_address or self.server.address

    @property
    def serving(self) -> bool:
        """Not closed (nor closing: retired, given up, or told to)."""
        return not self._closed.is_set()

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self in context.running:
            context.running.remove(self)
        await self.batched.close(timeout=2)
        for task in [*self._tasks, *self._gathers]:
            task.cancel()
        await self.server.close()
        await self.pool.close()
        await self.extras.close()
        if self._runner is not None:
            self._runner.shutdown()
        if isinstance(self.data, SpillBuffer):
            await asyncio.to_thread(self.data.close)  # waits for a spill under way
        if self.local_directory:
            shutil.rmtree(self.local_directory, ignore_errors=True)
        self._resume_all()
        self.memory.close()
        if self.client is not None:
            await asyncio.to_thread(self.client.close)
        await self.lifecycle.close(self)

    def _resume_all(self) -> None:
        """Let every task waiting in ``rejoin()`` go on (the worker starts afresh or ends)."""
        events, self.resume_events = self.resume_events, {}
        for event in events.values():
            event.set()

    def from_thread(self, kind: type[ev.Secede | ev.Rejoin], key: Any) -> bool:
        """From a task's thread: hand the state machine ``kind(key)``; False if closed."""
        if self.loop is None or self._closed.is_set():
            return False
        try:
            self.loop.call_soon_threadsafe(
                lambda: self.handle(kind(stimulus_id=self.new_id(), key=key)))
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True

    async def finished(self) -> None:
        """Wait until the worker has closed (e.g. because the scheduler went away)."""
        await self._closed.wait()

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the state machine -------------------------------------------------------------

    def handle(self, *stimuli: ev.Stimulus) -> None:
        assert self.state is not None
        watching = self.extras.watching  # plugins with a transition hook
        if watching:
            self.extras.mark(self.state.log)
        for instruction in self.state.handle(*stimuli):
            self._carry_out(instruction)
        if watching:
            self.extras.transitions(self.state.log)

    def _carry_out(self, instruction: ev.Instruction) -> None:
        if isinstance(instruction, ev.Execute):
            self._execute(instruction.key)
        elif isinstance(instruction, ev.Resume):
            event = self.resume_events.pop(instruction.key, None)
            if event is not None:
                event.set()
        elif isinstance(instruction, ev.GatherDep):
            task = asyncio.ensure_future(self._gather_dep(instruction))
            self._gathers.add(task)
            task.add_done_callback(self._gathers.discard)
        elif isinstance(instruction, ev.ReleaseData):
            for key in instruction.keys:
                with contextlib.suppress(KeyError):  # (pop would read a spilled value back)
                    del self.data[key]
                self._fetched.discard(key)
        elif isinstance(instruction, ev.Spill):
            if isinstance(self.data, SpillBuffer):
                self.data.async_evict_until_below_target(instruction.target)
                self.memory.watch_spills()
            self.shuffles.spill()
            if instruction.trim:
                self.memory.trim()
        elif isinstance(instruction, ev.SendToScheduler):
            send = self.batched.send_later if instruction.may_wait else self.batched.send
            wire = instruction.msg.to_wire()
            if isinstance(instruction.msg, msgs.TaskStarted):
                self._start_reports[instruction.msg.key] = wire
            with contextlib.suppress(CommClosedError):
                send(wire)
        else:  # pragma: no cover
            raise TypeError(f"unknown instruction {instruction!r}")

    def _execute(self, key: Any) -> None:
        assert self.state is not None
        assert self._runner is not None
        tasks = self.state.tasks
        task = tasks[key]
        self.stats["local_input_bytes"] += sum(
            tasks[k].nbytes for k in task.dependencies if k not in self._fetched
        )
        run_spec, function = task.run_spec, task.function
        assert run_spec is not None  # the state machine executes only tasks it was given
        data, dependencies = self.data, task.dependencies
        inline, measured = task.inline_result, self._measured

        def call() -> Any:
            # On the task's thread: a spilled input is read back from disk here.
            inputs = {dep: data[dep] for dep in dependencies}
            # futures inside bind to get_client()
            fn, args, kwargs = runspec.unpack(run_spec, function)
            if inputs:
                args, kwargs = runspec.substitute((args, kwargs), inputs)
            value = fn(*args, **kwargs)
            # On this thread, not the loop: its size, its copy into shared memory, and if
            # the client gets it with the report, its pickle.
            nbytes = sizeof(value)
            value = shared_results.place(value, nbytes)
            measured[key] = nbytes, pickle_small(value, inline, nbytes) if inline else None
            return value

        self._runner.submit(key, functools.partial(context.run_as, self, call, key))

    def _on_outcomes(self, outcomes: list[Outcome]) -> None:
        stimuli: list[ev.Stimulus] = []
        for o in outcomes:
            start_report = self._start_reports.pop(o.key, None)
            if start_report is not None:
                self.batched.withdraw(start_report)
            stimulus_id = self.new_id()
            if o.ok:
                measured = self._measured.pop(o.key, None)
                nbytes, pickled = measured if measured is not None else (sizeof(o.value), None)
                if isinstance(self.data, SpillBuffer):
                    self.data.put(o.key, o.value, nbytes)
                else:
                    self.data[o.key] = o.value
                stimuli.append(
                    ev.ExecuteSuccess(
                        stimulus_id=stimulus_id,
                        key=o.key,
                        nbytes=nbytes,
                        typename=type_name(o.value),
                        start=o.start,
                        stop=o.stop,
                        pickled=pickled,
                    )
                )
            else:
                self._measured.pop(o.key, None)
                stimuli.append(
                    ev.ExecuteFailure(
                        stimulus_id=stimulus_id,
                        key=o.key,
                        exception=pickle_exception(o.value),
                        traceback=b"",
                        exception_text=f"{type(o.value).__name__}: {o.value}",
                        traceback_text=o.traceback_text,
                        start=o.start,
                        stop=o.stop,
                    )
                )
        if self.memory_limit:
            self.memory.after_results(stimuli)
        self.handle(*stimuli)

    async def _gather_dep(self, instruction: ev.GatherDep) -> None:
        peer, keys = instruction.peer, list(instruction.keys)
        start = time.time()
        stimulus_id = self.new_id()
        try:
            data = await self.pool(peer).get_data(keys=keys)
        except Exception as e:
            if not isinstance(e, CommError):  # the peer is fine, the data not
                logger.warning("cannot fetch %s from %s: %s: %s",
                               keys[:5], peer, type(e).__name__, e)
            self.handle(
                ev.GatherDepFailure(stimulus_id=stimulus_id, peer=peer, keys=tuple(keys),
                                    reason=f"{type(e).__name__}: {e}")
            )
            return
        self.data.update(data)
        nbytes = {k: sizeof(v) for k, v in data.items()}
        self._fetched.update(data)
        self.stats["fetched_bytes"] += sum(nbytes.values())
        self._transfer_log.append((peer, start, time.time(), sum(nbytes.values())))
        self.stats["fetched_keys"] += len(nbytes)
        stimuli: list[ev.Stimulus] = [
            ev.GatherDepSuccess(stimulus_id=stimulus_id, peer=peer, data=nbytes)
        ]
        missing = tuple(k for k in keys if k not in data)
        if missing:
            stimuli.append(ev.GatherDepMissing(stimulus_id=stimulus_id, peer=peer, keys=missing))
        self.handle(*stimuli)

    # -- the scheduler stream ---------------------------------------------------------

    async def _read_scheduler(self, comm: Comm) -> None:
        """Until the stream closes or the scheduler falls silent for ``scheduler_timeout``."""
        loop = asyncio.get_running_loop()
        try:
            # one timeout pushed back per batch, not wait_for's task per read (3.11)
            async with asyncio.timeout(None) as silence:
                while True:
                    silence.reschedule(loop.time() + self.scheduler_timeout)
                    batch = await comm.read()
                    stimuli = [s for s in map(self._stimulus, batch) if s is not None]
                    if stimuli:
                        self.handle(*stimuli)
        except TimeoutError:
            logger.warning("no word from the scheduler for %s s", self.scheduler_timeout)
        except CommError:
            pass
        comm.abort()

    def _stimulus(self, msg: Any) -> ev.Stimulus | None:
        """The stimulus a message from the scheduler is; None if the server handles it
        (``OWN_MESSAGES``) or it is malformed (logged)."""
        try:
            message = msgs.read(msgs.TO_WORKER, msg, self.new_id, worker=self.address)
        except InvalidMessage as e:
            logger.warning("ignoring a malformed message from the scheduler: %s", e)
            return None
        own = self.OWN_MESSAGES.get(type(message))
        if own is not None:
            own(self, message)
            return None
        assert isinstance(message, ev.Stimulus), message  # tests/test_messages.py
        return message

    def _on_heartbeat_ack(self, msg: msgs.HeartbeatAck) -> None:
        self.latency = time.monotonic() - self._heartbeat_sent

    def _on_close_worker(self, msg: msgs.CloseWorker) -> None:
        logger.info("closing: %s by the scheduler", msg.reason or "retired")
        self.retired = True
        # Not one of ``_tasks``, which closing cancels.
        self._closing = asyncio.ensure_future(self.close())

    def _on_add_plugin(self, msg: msgs.AddWorkerPlugin) -> None:
        self.extras.add_soon(msg.name, msg.plugin)

    # The messages from the scheduler the server acts on itself; all others are stimuli.
    OWN_MESSAGES: ClassVar[dict[type[msgs.Message], Callable[[Any, Any], None]]] = {
        msgs.HeartbeatAck: _on_heartbeat_ack, msgs.AddWorkerPlugin: _on_add_plugin,
        msgs.CloseWorker: _on_close_worker,
    }

    def tell_scheduler(self, kind: type[msgs.FromWorker], **fields: Any) -> None:
        """Send the scheduler a ``kind`` message (dropped if the link is down)."""
        with contextlib.suppress(CommClosedError):
            self.batched.send(kind(stimulus_id=self.new_id(), **fields).to_wire())

    def new_id(self) -> str:
        """An id for a stimulus that starts here: ``<address>-<n>``."""
        assert self._ids is not None
        return self._ids()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            transfers = list(self._transfer_log)
            self._transfer_log.clear()
            self._heartbeat_sent = time.monotonic()
            metrics = self.metrics()
            beat = msgs.Heartbeat(
                stimulus_id=self.new_id(), metrics=metrics, transfers=tuple(transfers),
                **{k: metrics.pop(k) for k in ("managed", "spilled", "spilled_disk",
                                               "unmanaged", "paused")})
            with contextlib.suppress(CommClosedError):
                self.batched.send(beat.to_wire())

    def metrics(self) -> dict[str, Any]:
        return {
            **self.memory.metrics(),
            "keys": len(self.data),
            "executing": self.state.executing_count if self.state else 0,
            "fetched_bytes": self.stats["fetched_bytes"],
            "latency": self.latency,
            "time": time.time(),
        }


def type_name(value: Any) -> str:
    """``int``, ``numpy.ndarray``: the result's class as ``Future.type`` finds it again
    and ``repr(future)`` shows it (as dask's do)."""
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
