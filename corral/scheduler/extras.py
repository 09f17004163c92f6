"""The scheduler's answers to a client's everyday questions, and the worker plugins it
passes on.

Queries read the state machine and the task timeline, never change them: what each
worker holds or is processing, how many bytes, a key's story, the task stream. Worker
plugins (and uploaded files, which are plugins) arrive pickled and stay opaque here:
the scheduler keeps them by name, asks every worker to set them up, and hands them to
every worker that joins later, on its stream before any task.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import defaultdict
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from corral import messages as msgs
from corral.core import BatchedSend, Comm
from corral.core.validate import checked
from corral.exceptions import CommError
from corral.log_ring import LogRing
from corral.scheduler import stimulus_log
from corral.scheduler.workload import workload

if TYPE_CHECKING:
    from corral.scheduler.server import Scheduler

_TOKEN = re.compile(r"-[0-9a-f]{8,}$")


def key_prefix(key: Hashable) -> str:
    """The name a key's group goes by: ``"inc-8f3a..."`` → ``"inc"``, ``("x-ab12...", 0)``
    → ``"x"``."""
    if isinstance(key, tuple) and key:
        key = key[0]
    text = key.decode() if isinstance(key, bytes) else str(key)
    return _TOKEN.sub("", text)


class SchedulerExtras:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.worker_plugins: dict[str, bytes] = {}  # name → pickled plugin, in order
        self.graphs = 0  # graphs received from clients
        self._graph_waiters: set[asyncio.Future[None]] = set()
        self.logs = LogRing()  # attached while the scheduler listens

    def handlers(self) -> dict[str, Any]:
        return {"processing": self.processing, "nbytes": self.nbytes, "story": self.story,
                "task_stream": self.task_stream, "worker_logs": self.worker_logs,
                "scheduler_logs": self.scheduler_logs,
                "workload": self.workload,
                "register_worker_plugin": self.register_worker_plugin,
                "unregister_worker_plugin": self.unregister_worker_plugin}

    # -- queries -----------------------------------------------------------------------

    def processing(self, comm: Comm, workers: list[str] | None = None) -> dict[str, list[Any]]:
        """``{worker: [keys sent to it and not yet done]}``."""
        state = self.scheduler.state
        chosen = state.workers if workers is None else workers
        return {w: [ts.key for ts in state.workers[w].processing] if w in state.workers else []
                for w in chosen}

    def work_arrived(self) -> None:
        """A client sent a graph: wake whoever waits for new work (adaptive scaling)."""
        self.graphs += 1
        for waiter in self._graph_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._graph_waiters.clear()

    async def workload(self, comm: Comm, after: int | None = None,
                       timeout: float = 0.0) -> dict[str, Any]:
        """The work in hand and each worker's share (``corral.scheduler.workload``): what
        adaptive scaling decides on. With ``after`` (the ``graphs`` of an earlier answer),
        first wait up to ``timeout`` seconds for a graph newer than that one."""
        if after is not None and after == self.graphs and timeout > 0:
            waiter = asyncio.get_running_loop().create_future()
            self._graph_waiters.add(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, timeout)
            finally:
                self._graph_waiters.discard(waiter)
        return workload(self.scheduler.state, graphs=self.graphs).to_wire()

    def nbytes(self, comm: Comm, keys: list[Any] | None = None,
               summary: bool = True) -> dict[Any, int]:
        """Bytes of the keys in memory (or of ``keys``); with ``summary``, summed by the
        keys' prefix (the function name, for most keys)."""
        tasks = self.scheduler.state.tasks
        chosen = tasks.values() if keys is None else filter(None, map(tasks.get, keys))
        sizes = {ts.key: ts.nbytes for ts in chosen if ts.who_has}
        if not summary:
            return sizes
        out: dict[Any, int] = defaultdict(int)
        for key, n in sizes.items():
            out[key_prefix(key)] += n
        return dict(out)

    async def story(self, comm: Comm, keys: list[Any]) -> list[dict[str, Any]]:
        """What happened to ``keys``: the scheduler's story (each stimulus and the moves
        it caused), then each worker's transitions."""
        out: list[dict[str, Any]] = []
        told = stimulus_log.stories(self.scheduler.state, keys)
        for key in keys:
            for step in told.get(key, ()):
                out.append({"where": "scheduler", "key": key, "stimulus_id": step.stimulus_id,
                            "stimulus": type(step.stimulus).__name__ if step.stimulus else None,
                            "transitions": [list(t) for t in step.transitions]})
        replies = await self._ask_workers({"op": "story", "keys": keys})
        for worker, entries in replies.items():
            for key, start, finish, stimulus_id in entries if isinstance(entries, list) else ():
                out.append({"where": worker, "key": key, "stimulus_id": stimulus_id,
                            "stimulus": None, "transitions": [[start, finish]]})
        return out

    def task_stream(self, comm: Comm, since: int | None = None, start: float | None = None,
                    stop: float | None = None, count: int | None = None) -> dict[str, Any]:
        """Tasks that ran (and transfers), from the timeline: those after ``since`` (a
        ``seq`` this returned before), between ``start`` and ``stop`` (times), the
        last ``count``. ``{"seq": ..., "records": [...]}``."""
        timeline = self.scheduler.timeline
        seq, records = timeline.since(0 if since is None else since)
        chosen = [r for r in records if (start is None or r.stop >= start)
                  and (stop is None or r.start <= stop)]
        if count is not None:
            chosen = chosen[-count:] if count > 0 else []
        return {"seq": seq, "records": [
            {"key": r.key, "name": r.name, "worker": r.worker, "nbytes": r.nbytes,
             "status": "error" if r.kind == "erred" else "OK",
             "startstops": [{"action": "transfer" if r.kind == "transfer" else "compute",
                             "start": r.start, "stop": r.stop}]}
            for r in chosen]}

    def scheduler_logs(self, comm: Comm, n: int | None = None) -> list[tuple[str, str]]:
        """The last ``n`` (or all kept) lines logged under ``corral`` in the scheduler's
        process: ``[(level, line)]``."""
        return self.logs.last(n)

    async def worker_logs(self, comm: Comm, n: int | None = None,
                          workers: list[str] | None = None) -> dict[str, Any]:
        return await self._ask_workers({"op": "get_logs", "n": n}, workers)

    async def _ask_workers(self, msg: dict[str, Any],
                           workers: list[str] | None = None) -> dict[str, Any]:
        targets = list(self.scheduler.worker_streams) if workers is None else workers
        pool = self.scheduler.pool

        async def one(address: str) -> Any:
            try:
                return await pool(address).__getattr__(msg["op"])(
                    **{k: v for k, v in msg.items() if k != "op"})
            except CommError as e:
                return {"status": "error", "exception_text": repr(e)}

        results = await asyncio.gather(*(one(w) for w in targets))
        return dict(zip(targets, results, strict=True))

    # -- worker plugins --------------------------------------------------------------------

    @checked
    async def register_worker_plugin(self, comm: Comm, plugin: bytes, name: str,
                                     idempotent: bool = False) -> dict[str, Any]:
        """Keep ``plugin`` for workers that join later, and set it up on every worker now:
        ``{worker: {"status": "OK"} or the error}``. With ``idempotent``, a plugin already
        kept under ``name`` stays as it is (and nothing is set up again)."""
        if idempotent and name in self.worker_plugins:
            return {}
        self.worker_plugins.pop(name, None)
        self.worker_plugins[name] = bytes(plugin)
        return await self._ask_workers({"op": "plugin_add", "plugin": plugin, "name": name})

    @checked
    async def unregister_worker_plugin(self, comm: Comm, name: str) -> dict[str, Any]:
        if name not in self.worker_plugins:
            raise KeyError(f"no worker plugin named {name!r}")
        del self.worker_plugins[name]
        return await self._ask_workers({"op": "plugin_remove", "name": name})

    def worker_joined(self, address: str, stream: BatchedSend, stimulus_id: str) -> None:
        """Before its first task, a joining worker sets up every plugin kept here."""
        for name, plugin in self.worker_plugins.items():
            stream.send(msgs.AddWorkerPlugin(stimulus_id=stimulus_id, worker=address,
                                             name=name, plugin=plugin).to_wire())
