"""The client's side of coordination: numbered requests to the scheduler, their replies,
and the values they carry.

* ``Requests.ask`` sends a ``CoordinationRequest`` on the client's stream and waits for
  the ``CoordinationReply`` with its number. Timeouts are the scheduler's to enforce
  (the request carries one), so the answer is exactly one of granted, "timeout" or an
  error; the wait here has no deadline of its own. A wait given up here (the caller was
  cancelled) tells the scheduler (``CancelWait``), and a grant that crossed that message
  on the way is undone when it arrives.
* While the client holds leases it tells the scheduler it is alive (``RefreshLeases``)
  several times per lease timeout; if it stops (its process died or hung), the
  scheduler lets the leases go.
* Values travel as ``Item``s: pickled here, opaque on the scheduler, with the keys of
  the futures inside them (anywhere in the object, a dask collection's graph
  included) listed so that the scheduler keeps those keys alive. Unpickled by another
  client, each becomes a future of that client.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import pickle
from typing import TYPE_CHECKING, Any

import cloudpickle

from corral import messages as msgs
from corral.basic_types import Key
from corral.client.future import Future
from corral.exceptions import CommClosedError, CorralError

if TYPE_CHECKING:
    from corral.client.client import AsyncClient

logger = logging.getLogger("corral.client")

# The scheduler names the kind of a refusal; the caller gets an exception of that kind.
ERRORS: dict[str, type[Exception]] = {"KeyError": KeyError, "ValueError": ValueError,
                                      "RuntimeError": RuntimeError}


class Requests:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._numbers = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[msgs.CoordinationReply, list[Any]]]] = {}
        self._abandoned: dict[int, msgs.CoordinationRequest] = {}  # given up, reply due
        self.leases: set[str] = set()  # held by this client
        self._refresher: asyncio.Task[None] | None = None

    async def ask(self, cls: type[msgs.CoordinationRequest], name: str,
                  **fields: Any) -> tuple[msgs.CoordinationReply, list[Any]]:
        """Send a request and wait for its reply ("ok" or "timeout"; an error raises) and
        the values of the items it carries."""
        client = self.client
        client.check_open()
        number = next(self._numbers)
        request = cls(stimulus_id=client.new_id(), request=number, name=name, **fields)
        reply_due = asyncio.get_running_loop().create_future()
        self._pending[number] = reply_due
        client.send(request)
        try:
            reply, values = await reply_due
        except asyncio.CancelledError:
            if self._pending.pop(number, None) is not None and not client.closed:
                self._abandoned[number] = request
                client.send(msgs.CancelWait(stimulus_id=client.new_id(), request=number))
            raise
        if reply.outcome == "error":
            raise ERRORS.get(reply.value, CorralError)(reply.error)
        return reply, values

    def on_reply(self, reply: msgs.CoordinationReply) -> None:
        """From the loop: a reply from the scheduler."""
        waiting = self._pending.pop(reply.request, None)
        if waiting is not None:
            try:
                values = self._load(reply.items)
            except Exception as e:  # e.g. a module this process cannot import
                waiting.set_exception(e)
            else:
                waiting.set_result((reply, values))
            return
        request = self._abandoned.pop(reply.request, None)
        if request is None or reply.outcome != "ok":
            return
        # Granted while the caller gave up: undo it.
        if isinstance(request, msgs.AcquireLease):
            self.client.send(msgs.ReleaseLease(
                stimulus_id=self.client.new_id(), request=next(self._numbers),
                name=request.name, kind=request.kind, lease=request.lease))
        for _, keys in reply.items:  # wanted for us by the scheduler: let them go
            for key in keys:
                Future(key, self.client).release()
        if isinstance(request, msgs.GetQueue) and reply.items:
            logger.warning("%d item(s) taken from queue %r by a get that was interrupted "
                           "are lost", len(reply.items), request.name)

    def _load(self, items: tuple[msgs.Item, ...]) -> list[Any]:
        # Futures for every key first: the scheduler has made this client want them, and
        # if a value cannot be loaded, dropping these lets them go again.
        anchors = [Future(key, self.client) for _, keys in items for key in keys]
        values = [load_item(item, self.client) for item in items]
        del anchors
        return values

    def fail_all(self, error: BaseException) -> None:
        """The connection was lost or the client closed: no pending reply will come."""
        pending, self._pending = self._pending, {}
        self._abandoned.clear()
        self.leases.clear()  # the scheduler let them go with the connection
        for waiting in pending.values():
            if not waiting.done():
                waiting.set_exception(error)

    # -- leases ---------------------------------------------------------------------------

    def leased(self, lease: str, lease_timeout: float) -> None:
        self.leases.add(lease)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.ensure_future(self._refresh(lease_timeout))

    async def _refresh(self, lease_timeout: float) -> None:
        while self.leases and not self.client.closed:
            await asyncio.sleep(lease_timeout / 4)
            with contextlib.suppress(CommClosedError):
                self.client.send(msgs.RefreshLeases(stimulus_id=self.client.new_id()))


# -- items ---------------------------------------------------------------------------------


class _ItemPickler(cloudpickle.Pickler):  # type: ignore[misc]
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self.keys: dict[Key, None] = {}

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Future):
            self.keys[obj.key] = None
            return ("corral-future", obj.key)
        return None


class _ItemUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, client: AsyncClient) -> None:
        super().__init__(file)
        self.client = client

    def persistent_load(self, pid: Any) -> Any:
        kind, key = pid
        if kind != "corral-future":
            raise pickle.UnpicklingError(f"unknown reference {kind!r}")
        return Future(key, self.client)


def dump_item(value: Any) -> msgs.Item:
    """``value`` as it is held on the scheduler: pickled, with its futures' keys."""
    buffer = io.BytesIO()
    pickler = _ItemPickler(buffer)
    pickler.dump(value)
    return buffer.getvalue(), tuple(pickler.keys)


def load_item(item: msgs.Item, client: AsyncClient) -> Any:
    """The value of ``item``, its futures now ``client``'s. Called on the client's loop
    as the reply arrives, so that the futures exist before the scheduler's reports on
    their keys are read."""
    return _ItemUnpickler(io.BytesIO(item[0]), client).load()
