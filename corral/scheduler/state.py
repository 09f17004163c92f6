"""The scheduler's decisions, as a pure state machine: stimuli in, actions out.

Theory of operation
-------------------
* ``handle`` looks each stimulus's type up in ``dispatch.HANDLERS``; the handlers
  (``client_handlers``, ``worker_handlers``) work through the operations here, which
  keep the records, indexes and counts consistent (``validate`` checks them).
* A task is ``released`` (known, nothing under way), ``waiting`` (for inputs),
  ``no-worker`` (ready, but no allowed worker exists), ``processing`` (sent to one
  worker), ``memory`` (held by one or more workers) or ``erred``; *forgotten* tasks are
  deleted. Legal moves are the ``TRANSITIONS`` table; anything else raises.
* A task is *needed* while a client wants it or a dependent still has to run. A task
  that is not needed is released (its data freed on every holder), and forgotten once
  no task depends on it any more. Released tasks keep their ``run_spec`` while they have
  dependents: that is the lineage used to recompute lost data.
* Placement (``placement``): a ready task goes to the worker where it would start
  soonest, found in O(inputs + log workers).
* A task ready on a worker is sent at once, with a priority the worker honours:
  ``(-user priority, submission generation, depth-first order)``, so dependents finish
  before new roots start. Root-ish tasks are the exception (``queuing``): they are
  ``queued`` here and handed out, in priority order, as worker threads free up, so that
  a graph's roots cannot fill memory before its reductions run. On each ``Tick`` idle
  workers steal the last-to-run tasks of busy ones (``stealing``).
* Recovery (``recovery``) costs what it touches: tasks set aside while a dead worker's
  losses are sorted out wait in a FIFO with a membership set, and no-worker tasks are
  indexed, so neither a worker leaving nor one joining walks every task.
* Workers retire gracefully (``retirement``): their keys are copied to others before
  they are told to close.
* No I/O and no clock: time comes in the stimuli (``now``); silent workers and clients
  past their grace expire on a ``Tick`` (``liveness``). Every stimulus is logged (a
  bounded deque) and so is every transition, with the stimulus id that caused it:
  ``story(key)`` tells a key's history, and ``stimulus_log.replay`` feeds a recorded
  log to a fresh machine, which makes the same actions.
"""

from __future__ import annotations

import math
import pickle
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any

from corral.basic_types import Key
from corral.exceptions import DataLostError, InvalidTransition, UnknownStimulus
from corral.scheduler import events as ev
from corral.scheduler import queries, queuing, retirement, stimulus_log
from corral.scheduler.checkpoints import Checkpoints
from corral.scheduler.dispatch import HANDLERS
from corral.scheduler.liveness import Liveness
from corral.scheduler.placement import Placement
from corral.scheduler.records import (
    ACTIVE,
    ALLOWED,
    AWAITED,
    FIRE_AND_FORGET,
    NONE,
    TS,
    TaskState,
    WorkerState,
    added,
    discarded,
    links,
)
from corral.scheduler.stealing import Stealing
from corral.scheduler.stimulus_log import Logged, StoryStep, TransitionLog

# Seconds, for functions never seen to finish. Small, so that until we know better a
# task follows its data; stealing spreads the work once durations are measured.
DEFAULT_DURATION = 0.01


class SchedulerState:
    def __init__(
        self,
        *,
        bandwidth: float = 100e6,
        default_duration: float = DEFAULT_DURATION,
        allowed_failures: int = 3,
        max_steals_in_flight: int = 1000,  # requests outstanding (a tick fills thieves)
        log_length: int = 100_000,
        stimulus_log_length: int = 10_000,
        worker_ttl: float | None = None,
        client_grace: float = 30.0,
        checkpoint_ratio: float = 10.0,
        inline_result_bytes: int = 64 * 1024,
        worker_saturation: float = math.inf,
    ) -> None:
        # Everything a replay needs to build the same machine (``stimulus_log.replay``).
        self.options: dict[str, Any] = {
            "bandwidth": bandwidth, "default_duration": default_duration,
            "allowed_failures": allowed_failures, "max_steals_in_flight": max_steals_in_flight,
            "log_length": log_length, "stimulus_log_length": stimulus_log_length,
            "worker_ttl": worker_ttl, "client_grace": client_grace,
            "checkpoint_ratio": checkpoint_ratio, "inline_result_bytes": inline_result_bytes,
            "worker_saturation": worker_saturation,
        }
        # Results a client waits for that pickle this small travel with the report; the
        # scheduler relays those bytes and never unpickles them.
        self.inline_result_bytes = inline_result_bytes
        self.allowed_failures = allowed_failures
        self.tasks: dict[Key, TaskState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.client_keys: dict[str, dict[TaskState, None]] = defaultdict(dict)  # ordered sets
        self.log = TransitionLog(log_length)  # (key, old, new, stimulus id), flat
        # The stimuli themselves, newest last, and how many were ever handled: the log
        # replays the machine exactly while ``stimuli_handled == len(stimuli)``. It holds
        # graphs, packed (``stimulus_log.PackedGraph``), until they roll off; 0 keeps none.
        self.stimuli: deque[Logged] = deque(maxlen=stimulus_log_length)
        self.stimuli_handled = 0
        # Tasks per (function name, state), released ones left out: kept as tasks move so
        # that the dashboard and /metrics never walk every task to count them.
        self.counts: dict[tuple[str, TS], int] = {}
        self.placement = Placement(self.workers, bandwidth=bandwidth,
                                   default_duration=default_duration)
        self.stealing = Stealing(self.placement, max_in_flight=max_steals_in_flight)
        self.liveness = Liveness(worker_ttl=worker_ttl, client_grace=client_grace)
        # Second copies of results that would be expensive to recompute, once workers die.
        self.checkpoints = Checkpoints(self, ratio=checkpoint_ratio, bandwidth=bandwidth)
        self.generation = 0  # graphs submitted so far: the second part of priorities
        # Tasks in no-worker, in the order they got there: placed again when a worker joins.
        self.no_worker: dict[TaskState, None] = {}
        # Root-ish tasks ready to run, held here until a worker has a free thread slot.
        self.queue = queuing.Queue(worker_saturation, self.placement.durations)
        # Released tasks to bring back once a stimulus has sorted out what was lost
        # (``recovery``): a FIFO, and a set to ask "is it among them" in O(1).
        self.pending_compute: deque[TaskState] = deque()
        self.pending_set: set[TaskState] = set()
        # Clients to tell when a task starts (an Executor's calls turn "running"): kept
        # apart from TaskState so that ordinary tasks pay nothing for it.
        self.start_watchers: dict[Key, set[str]] = {}
        self.cancel_requests: dict[Key, set[str]] = {}  # cancel unless started: asked
        # Workers being retired (``retirement``): address → the keys only it holds that
        # another worker was asked to copy, and that worker.
        self.retiring: dict[str, dict[TaskState, WorkerState]] = {}
        self._actions: list[ev.Action] = []
        self._stimulus_id = ""

    # -- entry point -------------------------------------------------------------------

    def handle(self, *stimuli: ev.Stimulus) -> list[ev.Action]:
        log, checkpoints = self.stimuli.append, self.checkpoints  # two a task: looked up once
        for stimulus in stimuli:
            handler = HANDLERS.get(type(stimulus))
            if handler is None:
                raise UnknownStimulus(f"no scheduler handler for {type(stimulus).__name__}: "
                                      f"{stimulus!r}")
            self._stimulus_id = stimulus.stimulus_id
            log(stimulus)
            self.stimuli_handled += 1
            handler(self, stimulus)
            if checkpoints.unpinned:
                checkpoints.settle()
        if self.queue:
            queuing.fill_slots(self)  # once per batch: new roots leave with the results' answers
        if self.retiring:
            retirement.progress(self)
        actions, self._actions = self._actions, []
        return actions

    def log_packed(self, stimulus: ev.Stimulus, packed: Logged) -> None:
        """Keep ``packed`` in the stimulus log in place of ``stimulus``, just handled."""
        if self.stimuli and self.stimuli[-1] is stimulus:
            self.stimuli[-1] = packed

    def emit(self, action_type: type[ev.Action], **fields: Any) -> None:
        self._actions.append(action_type(stimulus_id=self._stimulus_id, **fields))

    def transition(self, ts: TaskState, new: TS) -> None:
        # Every task makes four or five of these: locals and identity tests, no tuple
        # built that is not kept.
        old = ts.state
        if new not in ALLOWED[old]:
            raise InvalidTransition(f"{ts.key!r}: {old.value} → {new.value}")
        self.log.add((ts.key, old._value_, new._value_, self._stimulus_id))
        if old is TS.MEMORY and (ts.anchors or ts.checkpoint):
            self.checkpoints.leaving_memory(ts)
        counts, name = self.counts, ts.name
        if old is not TS.RELEASED:  # tasks are born and forgotten released: never counted
            key = (name, old)
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]
        if new is not TS.RELEASED:
            key = (name, new)
            counts[key] = counts.get(key, 0) + 1
        if old is TS.NO_WORKER:
            del self.no_worker[ts]
        elif new is TS.NO_WORKER:
            self.no_worker[ts] = None
        if old is TS.QUEUED:
            self.queue.discard(ts)
        elif new is TS.QUEUED:
            self.queue.push(ts)
        is_active = new in ACTIVE
        if (old in ACTIVE) is not is_active:
            step = 1 if is_active else -1
            for dts in ts.dependencies:
                dts.active_dependents += step
        ts.state = new
        if self.start_watchers and (new is TS.MEMORY or new is TS.ERRED):
            self.start_watchers.pop(ts.key, None)  # done without a start report: none due

    # -- wanting and reporting --------------------------------------------------------

    def unwant_all(self, clients: Iterable[str], ts: TaskState) -> None:
        """Released ``ts`` is no longer wanted by ``clients``: forget it, or compute it
        again for whoever else needs it."""
        for client in clients:
            self.unwant(client, (ts.key,))
        if self.tasks.get(ts.key) is ts and ts.state == TS.RELEASED and self.needed(ts):
            self.compute(ts)

    def unwant(self, client: str, keys: Iterable[Key]) -> None:
        owned = self.client_keys.get(client, {})
        first = len(self._actions)
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.who_wants = discarded(ts.who_wants, client)
            owned.pop(ts, None)
            self.release_if_unneeded(ts)
        _merge_frees(self._actions, first)

    def report_if_done(self, ts: TaskState, client: str, pickled: bytes | None = None) -> None:
        """Tell ``client`` how ``ts`` ended; ``pickled``: its result, just reported by
        the worker (bytes, relayed unread)."""
        if client == FIRE_AND_FORGET:
            return  # a pseudo-client: nobody to tell
        if ts.state is TS.MEMORY:  # the common report: built here, not through ``emit``
            self._actions.append(ev.ReportKeyInMemory(
                stimulus_id=self._stimulus_id, client=client, key=ts.key, nbytes=ts.nbytes,
                who_has=tuple([w.address for w in ts.who_has]), typename=ts.typename,
                pickled=pickled))
        elif ts.state == TS.ERRED and ts.error is not None:
            exc, tb, exc_text, tb_text = ts.error
            self.emit(ev.ReportTaskErred, client=client, key=ts.key, exception=exc,
                       traceback=tb, exception_text=exc_text, traceback_text=tb_text)

    # -- computing ---------------------------------------------------------------------

    def compute(self, ts: TaskState) -> None:
        """Bring a released task towards memory: compute its lost inputs, then it."""
        # A worklist, not recursion: a chain of released inputs can be thousands long.
        stack = [(ts, False)]
        while stack:
            t, inputs_done = stack.pop()
            if not inputs_done:
                if t.state != TS.RELEASED or t.name == AWAITED:
                    continue  # reached twice through a shared input; or its graph is due
                if t.run_spec is None:
                    self.err(t, pickle.dumps(DataLostError(f"data of {t.key!r} was lost")), b"",
                              f"DataLostError: data of {t.key!r} was lost and cannot be "
                              "recomputed", "")
                    continue
                self.transition(t, TS.WAITING)
                t.waiting_on = NONE
                lost = []  # (a loop: a comprehension is a function call per task in 3.11)
                for d in t.dependencies:
                    if d.state is TS.RELEASED:
                        lost.append((d, False))
                if lost:
                    stack.append((t, True))
                    stack.extend(lost)
                    continue
                # none to compute first (a new graph's every task): on to it at once
            if t.state is not TS.WAITING:
                continue  # erred with an input meanwhile
            waiting, erred = [], None  # one pass over the inputs: the first erred one wins
            for dts in t.dependencies:
                if dts.state is TS.ERRED:
                    erred = dts
                    break
                if dts.state is not TS.MEMORY:
                    waiting.append(dts)
            if erred is not None:
                assert erred.error is not None
                self.err(t, *erred.error)
                continue
            if not t.waiting_on:
                t.waiting_on = links(waiting)
            else:
                for dts in waiting:
                    t.waiting_on = added(t.waiting_on, dts)
            if not t.waiting_on:
                self.place(t)

    def place(self, ts: TaskState) -> None:
        queue = self.queue
        if queue.enabled and queue.is_rootish(ts) and self.placement.least_loaded() is not None:
            if ts.state != TS.QUEUED:  # ``queuing.fill_slots`` hands it out, batch's end
                self.transition(ts, TS.QUEUED)
            return
        ws = self.placement.decide_worker(ts)
        if ws is None:
            if ts.state != TS.NO_WORKER:
                self.transition(ts, TS.NO_WORKER)
            return
        self.assign(ts, ws)

    def assign(self, ts: TaskState, ws: WorkerState) -> None:
        self.transition(ts, TS.PROCESSING)
        self.placement.add_processing(ts, ws)
        who_has, nbytes = {}, {}  # of its inputs: one pass fills both
        for d in ts.dependencies:
            holders = d.who_has
            who_has[d.key] = ((holders[0].address,)  # one holder, the usual case: no comprehension
                              if len(holders) == 1 and isinstance(holders, tuple)
                              else tuple([w.address for w in holders]))
            nbytes[d.key] = d.nbytes
        wants = ts.who_wants
        assert ts.run_spec is not None  # ``compute`` errs a task without one instead
        self._actions.append(ev.ComputeTask(
            stimulus_id=self._stimulus_id, worker=ws.address, key=ts.key, run_spec=ts.run_spec,
            who_has=who_has, nbytes=nbytes, priority=ts.priority, resources=ts.resources,
            function=ts.function, inline_result=self.inline_result_bytes
            if len(wants) > (FIRE_AND_FORGET in wants) else 0,  # a client other than it
        ))

    def unassign(self, ts: TaskState) -> WorkerState | None:
        ws = self.placement.remove_processing(ts)
        if ws is not None and self.queue.enabled:
            self.queue.note_freed(ws)
        return ws

    # -- replicas and errors -------------------------------------------------------------

    def add_replica(self, ts: TaskState, ws: WorkerState, nbytes: int) -> None:
        ts.nbytes = nbytes
        if ws not in ts.who_has:
            ts.who_has = added(ts.who_has, ws)
            ws.has_what[ts] = None
            ws.nbytes += nbytes

    def remove_replica(self, ts: TaskState, ws: WorkerState) -> None:
        if ws in ts.who_has:
            ts.who_has = discarded(ts.who_has, ws)
            ws.has_what.pop(ts, None)
            ws.nbytes -= ts.nbytes

    def err(self, ts: TaskState, exc: bytes, tb: bytes, exc_text: str, tb_text: str) -> None:
        """Mark ``ts`` and everything downstream erred, and tell the clients that want them."""
        if ts.state != TS.ERRED:
            self.emit(ev.Notice, event="task-erred", key=ts.key, detail=exc_text)
        stack, forgotten = [ts], []
        while stack:
            t = stack.pop()
            if t.state == TS.ERRED:
                continue
            if t.state == TS.PROCESSING:
                ws = self.unassign(t)
                if ws is not None:
                    self.emit(ev.FreeKeys, worker=ws.address, keys=(t.key,))
            if t.state == TS.MEMORY:
                continue
            self.transition(t, TS.ERRED)
            t.error, t.waiting_on = (exc, tb, exc_text, tb_text), NONE
            for client in t.who_wants:
                self.report_if_done(t, client)
            if FIRE_AND_FORGET in t.who_wants:
                forgotten.append(t.key)
            stack.extend(t.dependents)
        self.unwant(FIRE_AND_FORGET, forgotten)  # done, if not as hoped

    # -- releasing and forgetting ----------------------------------------------------------

    def needed(self, ts: TaskState) -> bool:
        return bool(ts.who_wants) or ts.active_dependents > 0 or (
            ts.checkpoint and self.checkpoints.pins[ts] > 0)

    def release_if_unneeded(self, *tasks: TaskState) -> None:
        """Release each of ``tasks`` in turn unless it is ``needed``, and with it every
        input that was kept only for it, however deep."""
        stack = list(reversed(tasks))  # a worklist, depth first: inputs before the next
        pins = self.checkpoints.pins
        first = len(self._actions)
        while stack:
            t = stack.pop()
            # ``needed``, inlined: asked a few times for every task that finishes
            if t.who_wants or t.active_dependents > 0 or (t.checkpoint and pins[t] > 0):
                continue
            if t.state is TS.MEMORY:
                for ws in list(t.who_has):
                    self.remove_replica(t, ws)
                    self._actions.append(ev.FreeKeys(stimulus_id=self._stimulus_id,
                                                     worker=ws.address, keys=(t.key,)))
            elif t.state is TS.PROCESSING:
                queued_on = self.unassign(t)
                if queued_on is not None:
                    self.emit(ev.FreeKeys, worker=queued_on.address, keys=(t.key,))
            if t.state is not TS.RELEASED:
                self.transition(t, TS.RELEASED)
                t.waiting_on = NONE
                stack.extend(t.dependencies)
            if not t.dependents and not t.who_wants:
                self._forget_if_unreferenced(t)
        if len(tasks) > 1:
            _merge_frees(self._actions, first)

    def _forget_if_unreferenced(self, ts: TaskState) -> None:
        # A worklist, not recursion: a chain of inputs can be thousands of tasks long.
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state != TS.RELEASED or t.dependents or t.who_wants:
                continue
            if self.tasks.get(t.key) is t:
                del self.tasks[t.key]
            self.stealing.forget(t.key)
            if self.start_watchers:  # (rarely any: no lookup for every task)
                self.start_watchers.pop(t.key, None)
            if self.cancel_requests:
                self.cancel_requests.pop(t.key, None)
            for dts in t.dependencies:
                dts.dependents = discarded(dts.dependents, t)
            stack.extend(t.dependencies)
            t.dependencies = NONE

    # -- queries ---------------------------------------------------------------------------

    def who_has(self, keys: Iterable[Key] | None = None) -> dict[Key, list[str]]:
        return queries.who_has(self, keys)

    def has_what(self) -> dict[str, list[Key]]:
        return queries.has_what(self)

    def nthreads(self) -> dict[str, int]:
        return {a: w.nthreads for a, w in self.workers.items()}

    def task_state(self, key: Key) -> str | None:
        ts = self.tasks.get(key)
        return None if ts is None else ts.state.value

    def info(self) -> dict[str, Any]:
        return queries.info(self)

    def story(self, key: Key) -> list[StoryStep]:
        """What happened to ``key``, oldest first: each stimulus still logged that named
        it or moved it, with the moves it caused (see ``stimulus_log.story``)."""
        return stimulus_log.story(self, key)

    def validate(self) -> None:
        queries.validate(self)


def _merge_frees(actions: list[ev.Action], first: int) -> None:
    """Turn the ``FreeKeys`` in ``actions[first:]`` into one per worker, so that letting
    go of N keys is a message to each worker, not N. A worker's keys join its earlier
    ``FreeKeys`` only if no other action for that worker came between: what each worker
    is told keeps its order."""
    if len(actions) - first < 2:
        return
    merged: list[ev.Action] = []
    grown: list[tuple[int, list[Key]]] = []  # (place in ``merged``, all its keys)
    open_: dict[str, list[Key]] = {}  # worker -> the keys of its FreeKeys still open
    for action in actions[first:]:
        if type(action) is ev.FreeKeys:
            keys = open_.get(action.worker)
            if keys is None:
                keys = open_[action.worker] = list(action.keys)
                grown.append((len(merged), keys))
                merged.append(action)
            else:
                keys.extend(action.keys)
            continue
        worker = getattr(action, "worker", None)
        if worker is not None:
            open_.pop(worker, None)
        merged.append(action)
    for place, keys in grown:
        free = merged[place]
        assert isinstance(free, ev.FreeKeys)
        if len(keys) > len(free.keys):
            merged[place] = ev.FreeKeys(stimulus_id=free.stimulus_id, worker=free.worker,
                                        keys=tuple(keys))
    actions[first:] = merged
