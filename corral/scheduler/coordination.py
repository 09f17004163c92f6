"""Locks, semaphores, events, variables, queues and datasets: a pure state machine.

Theory of operation
-------------------
* Primitives are named, one namespace per kind (``Lock("db")`` anywhere is the same
  lock). Each is made on first use and forgotten once it is back to its empty state
  (no lease, no waiter, no item, not set), so names cost nothing when unused.
* The scheduler runs no user code: values live here as opaque bytes pickled by a
  client (``msgs.Item``), with the keys of the futures inside them.
* Every request (``msgs.CoordinationRequest``) gets exactly one ``CoordinationReply``
  with its number: at once if it can be answered, otherwise when it can be (waiters are
  served first come, first served) or when its deadline, ``now + timeout``, has passed
  at a ``Tick`` ("timeout"). A client that gives up (``CancelWait``) or goes away
  (``HolderGone``) gets no reply; it is no longer waiting.
* Leases: a lock is a semaphore of one lease. A lease is held by the client that asked
  for it (a task's holder is its worker's client). A holder's leases are released when
  it goes away, or when it has said nothing (no request, no ``RefreshLeases``) for
  ``lease_timeout`` seconds at a ``Tick``: a holder that dies unseen cannot block the
  others for ever.
* Keys inside held items stay alive: the pseudo-client ``HOLDER`` wants each such key
  while at least one held item names it (``WantKeys``/``UnwantKeys``, carried out as the
  scheduler state machine's ``ClientDesiresKeys``/``ClientReleasesKeys``). Handing an
  item to a client replies first, then makes that client want the keys, and only then
  lets go of them, so the data never lapses in between.
* No I/O and no clock: time arrives in the stimuli (``now``). Actions come out in the
  order they must be carried out.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corral import messages as msgs
from corral.basic_types import Key
from corral.exceptions import UnknownStimulus
from corral.scheduler.events import Tick

HOLDER = "corral-coordination"  # the pseudo-client that wants the keys held here
LEASE_TIMEOUT = 30.0


# -- stimuli and actions that never travel ------------------------------------------------


@dataclass(frozen=True, slots=True)
class HolderGone(msgs.CoordinationStimulus):
    """``client`` disconnected or was removed: its leases go, its waits end unanswered."""

    client: str


@dataclass(frozen=True, slots=True)
class WantKeys(msgs.CoordinationAction):
    client: str
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class UnwantKeys(msgs.CoordinationAction):
    client: str
    keys: tuple[Key, ...]


Action = msgs.CoordinationReply | WantKeys | UnwantKeys


# -- records -----------------------------------------------------------------------------


@dataclass(slots=True)
class Waiter:
    request: msgs.CoordinationRequest
    deadline: float  # inf: none

    @property
    def ident(self) -> tuple[str, int]:
        return self.request.client, self.request.request


@dataclass(slots=True)
class Semaphore:
    max_leases: int
    leases: dict[str, str] = field(default_factory=dict)  # lease → holder
    waiters: deque[Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class Event:
    is_set: bool = False
    waiters: deque[Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class Variable:
    item: msgs.Item | None = None
    waiters: deque[Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class Queue:
    items: deque[msgs.Item] = field(default_factory=deque)
    getters: deque[Waiter] = field(default_factory=deque)
    putters: deque[Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class Holder:
    last_seen: float
    leases: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, name, lease)


class Coordination:
    def __init__(self, *, lease_timeout: float = LEASE_TIMEOUT, log_length: int = 1000) -> None:
        self.lease_timeout = lease_timeout
        self.semaphores: dict[tuple[str, str], Semaphore] = {}  # (kind, name)
        self.events: dict[str, Event] = {}
        self.variables: dict[str, Variable] = {}
        self.queues: dict[str, Queue] = {}
        self.datasets: dict[str, msgs.Item] = {}
        self.dataset_waiters: dict[str, deque[Waiter]] = {}
        self.holders: dict[str, Holder] = {}
        # Every wait under way, to cancel it or let it time out: (client, request) → the
        # deque it waits in.
        self.waits: dict[tuple[str, int], tuple[Waiter, deque[Waiter]]] = {}
        self.held: Counter[Key] = Counter()  # key → held items naming it
        self.log: deque[msgs.Event] = deque(maxlen=log_length)
        self.now = 0.0  # the latest time a stimulus brought
        self._actions: list[Action] = []
        self._sid = ""  # the id of the stimulus being handled: the cause of every action

    # -- entry point -----------------------------------------------------------------

    def handle(self, *stimuli: msgs.Event) -> list[Action]:
        for stimulus in stimuli:
            handler = HANDLERS.get(type(stimulus))
            if handler is None:
                raise UnknownStimulus(f"no coordination handler for {type(stimulus).__name__}")
            self.log.append(stimulus)
            self._sid = stimulus.stimulus_id
            now = getattr(stimulus, "now", None)
            if now is not None and now > self.now:
                self.now = now
            if isinstance(stimulus, msgs.CoordinationRequest | msgs.RefreshLeases):
                self._seen(stimulus.client, self.now)
            handler(self, stimulus)
        actions, self._actions = self._actions, []
        return actions

    def _reply(self, request: msgs.CoordinationRequest, value: Any = None,
               items: tuple[msgs.Item, ...] = ()) -> None:
        self._actions.append(msgs.CoordinationReply(
            stimulus_id=self._sid, client=request.client, request=request.request,
            value=value, items=items))
        keys = tuple(dict.fromkeys(k for _, ks in items for k in ks))
        if keys:  # the receiver wants them before anything here lets go of them
            self._actions.append(WantKeys(self._sid, request.client, keys))

    def _refuse(self, request: msgs.CoordinationRequest, error: str,
                kind: str = "RuntimeError") -> None:
        self._actions.append(msgs.CoordinationReply(
            stimulus_id=self._sid, client=request.client, request=request.request,
            outcome="error", value=kind, error=error))

    def _wait(self, request: msgs.CoordinationRequest, queue: deque[Waiter],
              timeout: float | None) -> bool:
        """Queue ``request``; or answer "timeout" at once if it may not wait (False)."""
        deadline = float("inf") if timeout is None else request.now + timeout
        if (request.client, request.request) in self.waits:  # a confused or hostile peer
            self._refuse(request, f"request {request.request} is already waiting", "ValueError")
            return False
        if deadline <= request.now:
            self._timed_out(request)
            return False
        waiter = Waiter(request, deadline)
        queue.append(waiter)
        self.waits[waiter.ident] = (waiter, queue)
        return True

    def _timed_out(self, request: msgs.CoordinationRequest) -> None:
        self._actions.append(msgs.CoordinationReply(
            stimulus_id=self._sid, client=request.client, request=request.request,
            outcome="timeout"))

    def _served(self, queue: deque[Waiter]) -> Waiter:
        waiter = queue.popleft()
        del self.waits[waiter.ident]
        return waiter

    # -- held keys -----------------------------------------------------------------------

    def _hold(self, item: msgs.Item) -> None:
        fresh = []
        for key in dict.fromkeys(item[1]):
            self.held[key] += 1
            if self.held[key] == 1:
                fresh.append(key)
        if fresh:
            self._actions.append(WantKeys(self._sid, HOLDER, tuple(fresh)))

    def _let_go(self, item: msgs.Item) -> None:
        gone = []
        for key in dict.fromkeys(item[1]):
            self.held[key] -= 1
            if self.held[key] <= 0:
                del self.held[key]
                gone.append(key)
        if gone:
            self._actions.append(UnwantKeys(self._sid, HOLDER, tuple(gone)))

    # -- leases ------------------------------------------------------------------------

    def _seen(self, client: str, now: float) -> None:
        holder = self.holders.get(client)
        if holder is not None and now > holder.last_seen:
            holder.last_seen = now

    def acquire(self, s: msgs.AcquireLease) -> None:
        if s.kind not in ("lock", "semaphore"):
            self._refuse(s, f"no leases on a {s.kind!r}", "ValueError")
            return
        sem = self.semaphores.get((s.kind, s.name))
        max_leases = 1 if s.kind == "lock" else s.max_leases
        if sem is None:
            sem = self.semaphores[s.kind, s.name] = Semaphore(max_leases)
        elif sem.max_leases != max_leases:
            self._refuse(s, f"semaphore {s.name!r} has max_leases={sem.max_leases}, "
                            f"not {max_leases}", "ValueError")
            return
        if s.lease in sem.leases or (len(sem.leases) < sem.max_leases and not sem.waiters):
            self._grant(sem, s)
        else:
            self._wait(s, sem.waiters, s.timeout)
            self._forget_semaphore(s.kind, s.name)

    def _grant(self, sem: Semaphore, s: msgs.AcquireLease) -> None:
        sem.leases[s.lease] = s.client
        holder = self.holders.get(s.client)
        if holder is None:
            holder = self.holders[s.client] = Holder(self.now)
        holder.leases.add((s.kind, s.name, s.lease))
        self._reply(s, self.lease_timeout)

    def release(self, s: msgs.ReleaseLease) -> None:
        held = self._drop_lease(s.kind, s.name, s.lease)
        self._reply(s, held)

    def _drop_lease(self, kind: str, name: str, lease: str) -> bool:
        """Release ``lease`` and grant what that makes room for; False if not held."""
        sem = self.semaphores.get((kind, name))
        holder_name = None if sem is None else sem.leases.pop(lease, None)
        if sem is None or holder_name is None:
            return False
        holder = self.holders.get(holder_name)
        if holder is not None:
            holder.leases.discard((kind, name, lease))
            if not holder.leases:
                del self.holders[holder_name]
        while sem.waiters and len(sem.leases) < sem.max_leases:
            waiter = self._served(sem.waiters)
            assert isinstance(waiter.request, msgs.AcquireLease)
            self._grant(sem, waiter.request)
        self._forget_semaphore(kind, name)
        return True

    def _forget_semaphore(self, kind: str, name: str) -> None:
        sem = self.semaphores[kind, name]
        if not sem.leases and not sem.waiters:
            del self.semaphores[kind, name]

    def refresh(self, s: msgs.RefreshLeases) -> None:
        pass  # ``handle`` has noted that the client was seen

    # -- events --------------------------------------------------------------------------

    def set_event(self, s: msgs.SetEvent) -> None:
        event = self.events.setdefault(s.name, Event())
        event.is_set = s.value
        while s.value and event.waiters:
            self._reply(self._served(event.waiters).request, True)
        self._forget_event(s.name)
        self._reply(s)

    def wait_event(self, s: msgs.WaitEvent) -> None:
        event = self.events.setdefault(s.name, Event())
        if event.is_set:
            self._reply(s, True)
        else:
            self._wait(s, event.waiters, s.timeout)
        self._forget_event(s.name)

    def _forget_event(self, name: str) -> None:
        event = self.events[name]
        if not event.is_set and not event.waiters:
            del self.events[name]

    # -- variables -----------------------------------------------------------------------

    def set_variable(self, s: msgs.SetVariable) -> None:
        var = self.variables.setdefault(s.name, Variable())
        old, var.item = var.item, s.item
        if s.item is not None:
            self._hold(s.item)
            while var.waiters:
                self._reply(self._served(var.waiters).request, None, (s.item,))
        if old is not None:
            self._let_go(old)
        self._forget_variable(s.name)
        self._reply(s)

    def get_variable(self, s: msgs.GetVariable) -> None:
        var = self.variables.setdefault(s.name, Variable())
        if var.item is not None:
            self._reply(s, None, (var.item,))
        else:
            self._wait(s, var.waiters, s.timeout)
        self._forget_variable(s.name)

    def _forget_variable(self, name: str) -> None:
        var = self.variables[name]
        if var.item is None and not var.waiters:
            del self.variables[name]

    # -- queues --------------------------------------------------------------------------

    def put_queue(self, s: msgs.PutQueue) -> None:
        queue = self.queues.setdefault(s.name, Queue())
        if not queue.putters and (s.maxsize == 0 or len(queue.items) < s.maxsize):
            self._hold(s.item)
            queue.items.append(s.item)
            self._reply(s)
        elif self._wait(s, queue.putters, s.timeout):
            self._hold(s.item)  # held while it waits for room too
        self._pump(s.name)

    def get_queue(self, s: msgs.GetQueue) -> None:
        queue = self.queues.setdefault(s.name, Queue())
        if s.count == 0:  # all there are now
            items = tuple(queue.items)
            queue.items.clear()
            self._hand_over(s, items)
        elif queue.getters or len(queue.items) < s.count:
            self._wait(s, queue.getters, s.timeout)
        else:
            self._hand_over(s, self._take(queue, s.count))
        self._pump(s.name)

    def _take(self, queue: Queue, count: int) -> tuple[msgs.Item, ...]:
        return tuple(queue.items.popleft() for _ in range(count))

    def _hand_over(self, s: msgs.CoordinationRequest, items: tuple[msgs.Item, ...]) -> None:
        self._reply(s, None, items)
        for item in items:
            self._let_go(item)

    def _pump(self, name: str) -> None:
        """Admit waiting puts while there is room and serve waiting gets while there are
        items, until neither can move; then forget the queue if it is empty."""
        queue = self.queues[name]
        moved = True
        while moved:
            moved = False
            while queue.putters:
                put = queue.putters[0].request
                assert isinstance(put, msgs.PutQueue)
                if put.maxsize and len(queue.items) >= put.maxsize:
                    break
                self._served(queue.putters)
                queue.items.append(put.item)
                self._reply(put)
                moved = True
            while queue.getters:
                get = queue.getters[0].request
                assert isinstance(get, msgs.GetQueue)
                if len(queue.items) < get.count:
                    break
                self._served(queue.getters)
                self._hand_over(get, self._take(queue, get.count))
                moved = True
        if not queue.items and not queue.getters and not queue.putters:
            del self.queues[name]

    # -- datasets ------------------------------------------------------------------------

    def publish(self, s: msgs.PublishDataset) -> None:
        old = self.datasets.get(s.name)
        if old is not None and not s.override:
            self._refuse(s, f"a dataset named {s.name!r} is already published; unpublish "
                            "it first, or pass override=True", "KeyError")
            return
        self.datasets[s.name] = s.item
        self._hold(s.item)
        if old is not None:
            self._let_go(old)
        for waiter in self.dataset_waiters.pop(s.name, deque()):
            del self.waits[waiter.ident]
            self._reply(waiter.request, None, (s.item,))
        self._reply(s)

    def get_dataset(self, s: msgs.GetDataset) -> None:
        item = self.datasets.get(s.name)
        if item is not None:
            self._reply(s, None, (item,))
        elif s.timeout is None:
            self._refuse(s, f"no dataset named {s.name!r} is published", "KeyError")
        else:
            waiters = self.dataset_waiters.setdefault(s.name, deque())
            self._wait(s, waiters, s.timeout)
            if not waiters:
                del self.dataset_waiters[s.name]

    def unpublish(self, s: msgs.UnpublishDataset) -> None:
        item = self.datasets.pop(s.name, None)
        if item is None:
            self._refuse(s, f"no dataset named {s.name!r} is published", "KeyError")
            return
        self._let_go(item)
        self._reply(s)

    # -- inspecting, cancelling, expiring --------------------------------------------------

    def inspect(self, s: msgs.Inspect) -> None:
        value: Any
        if s.kind in ("lock", "semaphore"):
            sem = self.semaphores.get((s.kind, s.name))
            value = 0 if sem is None else len(sem.leases)
        elif s.kind == "event":
            value = s.name in self.events and self.events[s.name].is_set
        elif s.kind == "variable":
            value = s.name in self.variables and self.variables[s.name].item is not None
        elif s.kind == "queue":
            value = len(self.queues[s.name].items) if s.name in self.queues else 0
        elif s.kind == "dataset":
            value = sorted(self.datasets)
        else:
            self._refuse(s, f"no primitive of kind {s.kind!r}", "ValueError")
            return
        self._reply(s, value)

    def cancel(self, s: msgs.CancelWait) -> None:
        self._end_wait((s.client, s.request))

    def _end_wait(self, ident: tuple[str, int],
                  reply: Callable[[msgs.CoordinationRequest], None] | None = None) -> None:
        """Stop ``ident``'s wait (answering it with ``reply``, if given) and tidy up."""
        found = self.waits.pop(ident, None)
        if found is None:
            return  # answered already
        waiter, queue = found
        queue.remove(waiter)
        request = waiter.request
        if reply is not None:
            reply(request)
        if isinstance(request, msgs.AcquireLease):
            self._forget_semaphore(request.kind, request.name)
        elif isinstance(request, msgs.WaitEvent):
            self._forget_event(request.name)
        elif isinstance(request, msgs.GetVariable):
            self._forget_variable(request.name)
        elif isinstance(request, msgs.PutQueue | msgs.GetQueue):
            if isinstance(request, msgs.PutQueue):
                self._let_go(request.item)
            self._pump(request.name)  # a get waiting ahead of others is gone
        elif isinstance(request, msgs.GetDataset) and not queue:
            del self.dataset_waiters[request.name]

    def holder_gone(self, s: HolderGone) -> None:
        for ident in [i for i in self.waits if i[0] == s.client]:  # first: none is granted
            self._end_wait(ident)
        self._expire(s.client)

    def _expire(self, client: str) -> None:
        holder = self.holders.pop(client, None)
        for kind, name, lease in sorted(holder.leases if holder else ()):
            self._drop_lease(kind, name, lease)

    def tick(self, s: Tick) -> None:
        for ident, (waiter, _) in list(self.waits.items()):
            if waiter.deadline <= s.now:
                self._end_wait(ident, self._timed_out)
        stale = [c for c, h in self.holders.items() if s.now - h.last_seen > self.lease_timeout]
        for client in stale:
            self._expire(client)

    # -- views -----------------------------------------------------------------------------

    def names(self) -> dict[str, list[str]]:
        """The primitives that exist now, by kind."""
        out: dict[str, list[str]] = {kind: [] for kind in msgs.KINDS}
        for kind, name in self.semaphores:
            out[kind].append(name)
        for kind, table in (("event", self.events), ("variable", self.variables),
                            ("queue", self.queues), ("dataset", self.datasets)):
            out[kind].extend(table)
        return out

    def validate(self) -> None:
        """Assert the invariants tying waits, leases, holders and held keys together."""
        queued = [w for sem in self.semaphores.values() for w in sem.waiters]
        queued += [w for e in self.events.values() for w in e.waiters]
        queued += [w for v in self.variables.values() for w in v.waiters]
        queued += [w for q in self.queues.values() for w in (*q.getters, *q.putters)]
        queued += [w for ws in self.dataset_waiters.values() for w in ws]
        assert sorted(w.ident for w in queued) == sorted(self.waits), "waits out of step"
        leases = {(k, n, lease): c for (k, n), sem in self.semaphores.items()
                  for lease, c in sem.leases.items()}
        assert {(*t, c) for c, h in self.holders.items() for t in h.leases} == {
            (*t, c) for t, c in leases.items()}, "holders out of step with leases"
        items: list[msgs.Item] = [v.item for v in self.variables.values() if v.item is not None]
        items += [i for q in self.queues.values() for i in q.items]
        items += [w.request.item for q in self.queues.values() for w in q.putters
                  if isinstance(w.request, msgs.PutQueue)]
        items += list(self.datasets.values())
        counted: Counter[Key] = Counter(k for item in items for k in dict.fromkeys(item[1]))
        assert counted == self.held, (counted, self.held)


HANDLERS: dict[type[msgs.Event], Callable[[Coordination, Any], None]] = {
    msgs.AcquireLease: Coordination.acquire,
    msgs.ReleaseLease: Coordination.release,
    msgs.RefreshLeases: Coordination.refresh,
    msgs.SetEvent: Coordination.set_event,
    msgs.WaitEvent: Coordination.wait_event,
    msgs.SetVariable: Coordination.set_variable,
    msgs.GetVariable: Coordination.get_variable,
    msgs.PutQueue: Coordination.put_queue,
    msgs.GetQueue: Coordination.get_queue,
    msgs.PublishDataset: Coordination.publish,
    msgs.GetDataset: Coordination.get_dataset,
    msgs.UnpublishDataset: Coordination.unpublish,
    msgs.Inspect: Coordination.inspect,
    msgs.CancelWait: Coordination.cancel,
    HolderGone: Coordination.holder_gone,
    Tick: Coordination.tick,
}
