"""What a worker answers to its peers and clients: the data it holds (``get_data``,
``update_data`` for scatter), ``client.run``, ``client.restart``'s reset, its identity;
and how task results and errors are pickled to travel.

``Serving`` is one of the worker's extensions, like ``WorkerExtras``: it reaches the
worker's store and state machine through it, and holds only the seals under way of
values about to go through shared memory (``shared_results``, "on-send").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pickle
from typing import TYPE_CHECKING, Any

from corral.core import Comm
from corral.core.validate import checked
from corral.exceptions import CommClosedError
from corral.protocol import dumps_pickle, loads_pickle
from corral.sizeof import sizeof
from corral.worker import context, shared_results
from corral.worker import events as ev
from corral.worker.spill import SpillBuffer

if TYPE_CHECKING:
    from corral.worker.server import Worker

logger = logging.getLogger("corral.worker")


class Serving:
    """The handlers of a worker's data and requests, for its ``Server``."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        # key -> (the value being sealed, its sealed copy to come): two peers fetching it
        # at once wait on one copy
        self._sealing: dict[Any, tuple[Any, asyncio.Future[Any]]] = {}

    def handlers(self) -> dict[str, Any]:
        return {"get_data": self.get_data, "update_data": self.update_data, "run": self.run,
                "reset": self.reset, "identity": self.identity}

    @checked
    async def get_data(self, comm: Comm, keys: list[Any]) -> None:
        """Send the values of those of ``keys`` held here; absent keys are left out.

        Written here rather than returned, so that a value that cannot be sent is logged
        where it lives; the caller gets the cause as the error of its call.
        """
        store = self.worker.data
        if isinstance(store, SpillBuffer):  # spilled values are read on its thread
            data = await store.async_get(keys, missing="omit")
        else:
            data = {k: store[k] for k in keys if k in store}
        if shared_results.seals_on_send():
            data = await self._sealed_to_send(comm, data)
        try:
            await comm.write(data)
        except CommClosedError:
            raise
        except Exception as e:
            logger.warning("cannot send %s to %s: %s: %s",
                           list(data)[:5], comm.peer_address, type(e).__name__, e)
            raise

    async def _sealed_to_send(self, comm: Comm, data: dict[Any, Any]) -> dict[Any, Any]:
        """``data``, each array in it that goes through shared memory on ``comm`` sealed
        first (on another thread: a copy), and held sealed from now on in place of the
        original: its later sends copy nothing."""
        todo = [key for key, value in data.items()
                if shared_results.sealable(value) and comm.sends_shared(value.nbytes)]
        if not todo:
            return data
        data = dict(data)
        for key in todo:
            value = data[key]
            sealing = self._sealing.get(key)
            if sealing is None or sealing[0] is not value:
                future = asyncio.ensure_future(asyncio.to_thread(shared_results.seal, value))
                self._sealing[key] = sealing = (value, future)
                future.add_done_callback(functools.partial(self._sealed, key, value))
            try:
                data[key] = await asyncio.shield(sealing[1])
            except Exception as e:  # the value goes as it is, copied into shared memory
                logger.warning("cannot place %r in shared memory: %s: %s", key,
                               type(e).__name__, e)
        return data

    def _sealed(self, key: Any, value: Any, future: asyncio.Future[Any]) -> None:
        sealing = self._sealing.get(key)
        if sealing is not None and sealing[1] is future:
            del self._sealing[key]
        if future.cancelled() or future.exception() is not None:
            return
        sealed = future.result()
        store = self.worker.data
        if sealed is value:  # memory or mappings short: nothing to swap
            return
        if isinstance(store, SpillBuffer):
            store.swap(key, value, sealed)
        elif store.get(key) is value:  # released or replaced meanwhile: not brought back
            store[key] = sealed

    @checked
    def update_data(
        self, comm: Comm, data: dict[Any, Any], report: bool = True
    ) -> dict[Any, int]:
        """Store values sent directly (scatter); returns their sizes."""
        worker = self.worker
        worker.data.update(data)
        nbytes = {k: sizeof(v) for k, v in data.items()}
        worker.handle(ev.UpdateData(stimulus_id=worker.new_id(), data=nbytes, report=report))
        return nbytes

    @checked
    async def run(self, comm: Comm, function: bytes, args: bytes = b"") -> dict[str, Any]:
        """``client.run``: call a function here; result and errors travel pickled."""

        def call() -> Any:
            fn = loads_pickle(function)
            call_args, call_kwargs = loads_pickle(args) if args else ((), {})
            return fn(*call_args, **call_kwargs)

        try:
            result = await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(context.run_as, self.worker, call))
        except Exception as e:
            import traceback

            return {
                "status": "error",
                "exception": pickle_exception(e),
                "exception_text": f"{type(e).__name__}: {e}",
                "traceback_text": "".join(traceback.format_exception(e)),
            }
        return {"status": "OK", "result": dumps_pickle(result)}

    def reset(self, comm: Comm) -> str:
        """Drop all data and queued work (``client.restart``)."""
        worker = self.worker
        assert worker.state is not None
        worker.handle(ev.FreeKeys(stimulus_id=worker.new_id(), keys=tuple(worker.state.tasks)))
        worker.data.clear()
        return "OK"

    def identity(self, comm: Comm) -> dict[str, Any]:
        worker = self.worker
        return {"type": "Worker", "address": worker.address, "name": worker.name,
                "nthreads": worker.nthreads, "pid": os.getpid()}


def pickle_exception(exc: BaseException) -> bytes:
    try:
        return dumps_pickle(exc)
    except Exception:
        from corral.exceptions import RemoteError

        return pickle.dumps(RemoteError(type(exc).__name__, str(exc)))


def pickle_small(value: Any, limit: int, nbytes: int) -> bytes | None:
    """``value`` (of ``sizeof`` ``nbytes``) pickled, if it pickles to at most ``limit``
    bytes (else, or if it cannot be pickled here, None: the client fetches it as a large
    one)."""
    if nbytes > limit:  # an estimate, to skip pickling what is surely too large
        return None
    try:
        blob = dumps_pickle(value)
    except Exception:
        return None
    return blob if len(blob) <= limit else None
