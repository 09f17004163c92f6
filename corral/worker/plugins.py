"""What a worker keeps beside its tasks: user plugins, uploaded files, a ring of its
recent log lines.

* A worker plugin is any object with some of ``setup(worker)``, ``teardown(worker)``
  and ``transition(key, start, finish, **kwargs)``; it arrives pickled, through the
  scheduler, which keeps it opaque and hands it to every worker that joins later too
  (``client.register_plugin``). Only workers ever unpickle or run it. A plugin
  registered again under its name replaces the old one (torn down first).
* ``UploadFile`` is such a plugin: a ``.py`` file (imported, or reloaded if it was),
  or a ``.zip``/``.egg`` put on ``sys.path``.
* The log ring holds the last lines logged under ``corral`` in this process, for
  ``client.get_worker_logs()``; several workers in one process share what is logged.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from corral.log_ring import LogRing
from corral.protocol import loads_pickle

if TYPE_CHECKING:
    from corral.worker.server import Worker

logger = logging.getLogger("corral.worker")


class UploadFile:
    """A worker plugin that puts a file's contents on every worker (``upload_file``)."""

    def __init__(self, filename: str, data: bytes, load: bool = True) -> None:
        self.filename = os.path.basename(filename)
        self.data = data
        self.load = load

    def setup(self, worker: Worker) -> str:
        directory = worker.extras.directory()
        path = os.path.join(directory, self.filename)
        with open(path, "wb") as f:
            f.write(self.data)
        entry = path if self.filename.endswith((".zip", ".egg")) else directory
        if entry not in sys.path:
            sys.path.insert(0, entry)
        importlib.invalidate_caches()
        name, ext = os.path.splitext(self.filename)
        if self.load and ext == ".py":
            module = sys.modules.get(name)
            if module is not None:
                importlib.reload(module)
            else:
                importlib.import_module(name)
        return path


class WorkerExtras:
    """A worker's plugins, log ring and scratch directory, and the handlers that reach them."""

    def __init__(self, worker: Worker, log_length: int = 1000) -> None:
        self.worker = worker
        self.plugins: dict[str, Any] = {}
        self.watching = False  # whether a plugin has a transition hook
        self.logs = LogRing(log_length)
        self._directory: str | None = None
        self._own_directory = False  # made here: removed at close
        self._watched: tuple[Any, ...] | None = None  # last transition seen: see below

    def start(self) -> None:
        self.logs.attach()

    async def close(self) -> None:
        self.logs.detach()
        for name in list(self.plugins):
            try:
                await self._teardown(name)
            except Exception as e:
                logger.warning("worker plugin %r failed to tear down: %s: %s", name,
                               type(e).__name__, e)
        if self._own_directory and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def directory(self) -> str:
        """Where uploaded files go: the worker's ``local_directory``, or a fresh one."""
        if self._directory is None:
            local = getattr(self.worker, "local_directory", None)
            if local:
                self._directory = os.path.join(local, "uploads")
                os.makedirs(self._directory, exist_ok=True)
            else:
                self._directory = tempfile.mkdtemp(prefix="corral-uploads-")
                self._own_directory = True
        return self._directory

    def handlers(self) -> dict[str, Any]:
        return {"plugin_add": self.plugin_add, "plugin_remove": self.plugin_remove,
                "get_logs": self.get_logs, "story": self.story}

    # -- plugins -----------------------------------------------------------------------

    async def plugin_add(self, comm: Any, plugin: bytes, name: str) -> dict[str, Any]:
        """Unpickle and set up ``plugin`` under ``name``; the outcome, errors included."""
        try:
            await self.add(name, plugin)
        except Exception as e:
            return {"status": "error", "exception_text": f"{type(e).__name__}: {e}"}
        return {"status": "OK"}

    async def add(self, name: str, blob: bytes) -> None:
        pending = self.install(name, blob)
        if pending is not None:
            await pending

    def install(self, name: str, blob: bytes) -> Awaitable[Any] | None:
        """Tear down the plugin of that name, unpickle and set up the new one, now;
        what is left to await if its setup is a coroutine."""
        if name in self.plugins:
            old = self.plugins.pop(name)
            self._plugins_changed()
            teardown = getattr(old, "teardown", None)
            if teardown is not None:
                _spawn_if_awaitable(teardown(worker=self.worker))
        plugin = loads_pickle(blob)
        self.plugins[name] = plugin
        self._plugins_changed()
        setup = getattr(plugin, "setup", None)
        result = None if setup is None else setup(worker=self.worker)
        return result if inspect.isawaitable(result) else None

    def add_soon(self, name: str, blob: bytes) -> None:
        """Set up a plugin the scheduler sent on joining, before the tasks that follow it
        on the stream; a failure is logged."""
        try:
            pending = self.install(name, blob)
        except Exception as e:
            logger.error("worker plugin %r failed to set up: %s: %s", name, type(e).__name__, e)
            return
        if pending is not None:
            _spawn_if_awaitable(pending)

    async def plugin_remove(self, comm: Any, name: str) -> dict[str, Any]:
        if name not in self.plugins:
            return {"status": "error", "exception_text": f"KeyError: no plugin named {name!r}"}
        try:
            await self._teardown(name)
        except Exception as e:
            return {"status": "error", "exception_text": f"{type(e).__name__}: {e}"}
        return {"status": "OK"}

    async def _teardown(self, name: str) -> None:
        plugin = self.plugins.pop(name)
        self._plugins_changed()
        teardown = getattr(plugin, "teardown", None)
        if teardown is not None:
            result = teardown(worker=self.worker)
            if inspect.isawaitable(result):
                await result

    def _plugins_changed(self) -> None:
        # Read on every stimulus the worker handles: kept, not computed there.
        self.watching = any(hasattr(p, "transition") for p in self.plugins.values())

    def mark(self, log: deque[tuple[Any, str, str, str]]) -> None:
        """Before a stimulus: remember the state machine's newest transition."""
        self._watched = log[-1] if log else None

    def transitions(self, log: deque[tuple[Any, str, str, str]]) -> None:
        """After it: tell plugins of the transitions made since ``mark``."""
        new = []
        for entry in reversed(log):
            if entry is self._watched:
                break
            new.append(entry)
        for key, start, finish, stimulus_id in reversed(new):
            for name, plugin in list(self.plugins.items()):
                hook = getattr(plugin, "transition", None)
                if hook is None:
                    continue
                try:
                    hook(key, start, finish, stimulus_id=stimulus_id)
                except Exception as e:
                    logger.warning("worker plugin %r failed on %r %s → %s: %s: %s", name,
                                   key, start, finish, type(e).__name__, e)

    # -- logs and stories ----------------------------------------------------------------

    def get_logs(self, comm: Any, n: int | None = None) -> list[tuple[str, str]]:
        return self.logs.last(n)

    def story(self, comm: Any, keys: list[Any]) -> list[tuple[Any, str, str, str]]:
        state = self.worker.state
        if state is None:
            return []
        wanted = set(keys)
        return [entry for entry in state.log if entry[0] in wanted]


_background: set[asyncio.Future[Any]] = set()


def _spawn_if_awaitable(result: Any) -> None:
    if inspect.isawaitable(result):
        task = asyncio.ensure_future(result)
        _background.add(task)
        task.add_done_callback(_background.discard)
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a worker plugin's setup or teardown failed: %r", task.exception())
