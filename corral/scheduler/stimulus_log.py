"""The stimuli a scheduler handled: their ids, a key's story, and exact replay.

* Ids: one scheme, ``"<origin>-<n>"`` (``corral.messages.StimulusIds``). The scheduler
  names the stimuli it makes itself (a tick, a worker removed, a restart) with its own
  id as origin; peers send their own ids, which are kept as they come.
* Story: ``SchedulerState.log`` holds transitions with the id of their cause, and
  ``SchedulerState.stimuli`` the causes themselves; ``story(state, key)`` joins the two.
* Replay: the state machine is deterministic given its options and stimuli, so feeding
  a recording (``record``) to a fresh machine (``replay``) makes the same actions, in
  the same order, as long as the bounded log still holds every stimulus from the start.
* Graphs are logged packed (``PackedGraph``): a column per field, and keys, names and
  run specs that are the very objects the task records hold, so a logged graph costs
  about 40 bytes a task beyond what the scheduler keeps anyway, not a second copy of
  every task as it came off the wire. ``unpack`` gives back an equal ``UpdateGraph``.

Recordings are pickles. Stimuli are frozen dataclasses of keys (str, or tuples of str
and int, which msgpack would turn into lists and cannot use as map keys), bytes and
nested tuples and dicts: pickle round-trips all of them exactly, with no schema to keep
in step with ``events``. A recording is read only by the operator's own tools, never
taken from a peer, so pickle's trust model holds.
"""

from __future__ import annotations

import pickle
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from corral.scheduler import events as ev
from corral.scheduler.events import Key

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState


@dataclass(frozen=True, slots=True, eq=False)
class PackedGraph:
    """An ``UpdateGraph`` as the log keeps it: one column per field. Task ``i`` is
    ``keys[i]``, with ``run_specs[i]``, ``names[i]`` and function ``function_ids[i]``
    (-1: none apart), and needs the next ``ndeps[i]`` keys of ``deps``; a task with any
    other option set (priority, restrictions, retries, resources) is kept whole in
    ``special``, by position."""

    stimulus_id: str
    client: str
    keys: tuple[Key, ...]
    run_specs: tuple[bytes, ...]
    names: tuple[str, ...]
    function_ids: array[int]
    ndeps: array[int]
    deps: tuple[Key, ...]
    special: dict[int, ev.TaskSpec]
    wanted: tuple[Key, ...]
    report_start: bool
    now: float
    functions: tuple[bytes, ...]

    def unpack(self) -> ev.UpdateGraph:
        specs: list[ev.TaskSpec] = []
        deps, start = self.deps, 0
        special = self.special
        columns = zip(self.keys, self.run_specs, self.names, self.function_ids, self.ndeps,
                      strict=True)
        for i, (key, run_spec, name, function, n) in enumerate(columns):
            spec = special.get(i)
            specs.append(spec if spec is not None else ev.TaskSpec(
                key, run_spec, deps[start:start + n], name=name, function=function))
            start += n
        return ev.UpdateGraph(stimulus_id=self.stimulus_id, client=self.client,
                              tasks=tuple(specs), wanted=self.wanted,
                              report_start=self.report_start, now=self.now,
                              functions=self.functions)

    def mentions(self, key: Key) -> bool:
        return key in self.keys or key in self.deps or key in self.wanted


Logged: TypeAlias = "ev.Stimulus | PackedGraph"  # an entry of ``SchedulerState.stimuli``


def _plain(spec: ev.TaskSpec) -> bool:
    """Has ``spec`` no option beyond what ``PackedGraph`` keeps in columns?"""
    return (spec.priority == 0 and spec.workers is None and not spec.allow_other_workers
            and spec.retries == 0 and spec.resources is None)


def pack(s: ev.UpdateGraph, records: Sequence[Any], deps: list[Key],
         wanted: tuple[Key, ...]) -> PackedGraph:
    """``s``, just handled, packed for the log: ``records[i]`` is the task record of
    ``s.tasks[i]``, ``deps`` every input's key in order, and ``wanted`` the wanted keys,
    each key the object the scheduler holds already where it knows the task."""
    specs = s.tasks
    return PackedGraph(
        s.stimulus_id, s.client, tuple(ts.key for ts in records),
        tuple(spec.run_spec for spec in specs), tuple(ts.name for ts in records),
        array("i", [spec.function for spec in specs]),
        array("I", [len(spec.dependencies) for spec in specs]), tuple(deps),
        {i: spec for i, spec in enumerate(specs) if not _plain(spec)},
        wanted, s.report_start, s.now, s.functions)


def stimulus(logged: Logged) -> ev.Stimulus:
    return logged.unpack() if isinstance(logged, PackedGraph) else logged


class TransitionLog:
    """The last ``maxlen`` transitions, oldest first: iterates as (key, old state, new
    state, stimulus id). Kept flat, four items a transition in one deque, rather than a
    tuple a transition: a task makes four or five, and tuples kept that long would each
    be one more object for the garbage collector to count and walk (with a million
    tasks, most of the scheduler's time in the collector), and 80 bytes where four slots
    take 32. ``add((key, old, new, stimulus_id))`` is the deque's own ``extend``: the
    state machine calls it on every transition, so it costs no Python call."""

    __slots__ = ("_items", "add")

    def __init__(self, maxlen: int) -> None:
        self._items: deque[Any] = deque(maxlen=4 * maxlen)
        self.add = self._items.extend  # the tuple passed is freed at once

    def __iter__(self) -> Iterator[tuple[Key, str, str, str]]:
        items = iter(self._items)
        return zip(items, items, items, items, strict=True)  # one iterator: in fours

    def __len__(self) -> int:
        return len(self._items) // 4


class StoryStep(NamedTuple):
    """One stimulus in a key's story, and the moves (old state, new state) of that key
    it caused. ``stimulus`` is None once it has rolled off the stimulus log."""

    stimulus_id: str
    stimulus: ev.Stimulus | None
    transitions: tuple[tuple[str, str], ...]


def mentions(stimulus: Logged, key: Key) -> bool:
    """Does ``stimulus`` name ``key`` (as its key, among its keys, tasks or wants)?"""
    if isinstance(stimulus, PackedGraph):
        return stimulus.mentions(key)
    if getattr(stimulus, "key", None) == key:
        return True
    if key in getattr(stimulus, "keys", ()) or key in getattr(stimulus, "wanted", ()):
        return True
    if isinstance(stimulus, ev.ScatterData):
        return key in stimulus.placed
    if isinstance(stimulus, ev.UpdateGraph):
        return any(spec.key == key or key in spec.dependencies for spec in stimulus.tasks)
    return False


def story(state: SchedulerState, key: Key) -> list[StoryStep]:
    moves: dict[str, list[tuple[str, str]]] = {}
    for moved, old, new, stimulus_id in state.log:
        if moved == key:
            moves.setdefault(stimulus_id, []).append((old, new))
    steps: list[StoryStep] = []
    told: set[str] = set()
    for logged in state.stimuli:
        sid = logged.stimulus_id
        if sid in moves and sid not in told:
            steps.append(StoryStep(sid, stimulus(logged), tuple(moves[sid])))
            told.add(sid)
        elif sid not in moves and mentions(logged, key):
            steps.append(StoryStep(sid, stimulus(logged), ()))
    # Moves whose stimulus has rolled off the (shorter) stimulus log come first: older.
    earlier = [StoryStep(sid, None, tuple(m)) for sid, m in moves.items() if sid not in told]
    return earlier + steps


def stories(state: SchedulerState, keys: Iterable[Key]) -> dict[Key, list[StoryStep]]:
    """``story`` of each of ``keys`` at once: one pass over each log, not one per key
    (a stuck run asks about thousands of keys; key by key that held the scheduler's
    loop for minutes)."""
    wanted = set(keys)
    moves: dict[Key, dict[str, list[tuple[str, str]]]] = {k: {} for k in wanted}
    moved_by: dict[str, dict[Key, None]] = {}  # stimulus id → the keys it moved
    for moved, old, new, stimulus_id in state.log:
        if moved in wanted:
            moves[moved].setdefault(stimulus_id, []).append((old, new))
            moved_by.setdefault(stimulus_id, {})[moved] = None
    steps: dict[Key, list[StoryStep]] = {k: [] for k in wanted}
    told: dict[Key, set[str]] = {k: set() for k in wanted}
    for logged in state.stimuli:
        sid = logged.stimulus_id
        for key in _named(logged, wanted):
            if sid in moves[key] and sid not in told[key]:
                steps[key].append(StoryStep(sid, stimulus(logged), tuple(moves[key][sid])))
                told[key].add(sid)
            elif sid not in moves[key]:
                steps[key].append(StoryStep(sid, stimulus(logged), ()))
        for key in moved_by.get(sid, ()):
            if sid in told[key]:
                continue
            steps[key].append(StoryStep(sid, stimulus(logged), tuple(moves[key][sid])))
            told[key].add(sid)
    return {key: [StoryStep(sid, None, tuple(m)) for sid, m in moves[key].items()
                  if sid not in told[key]] + steps[key] for key in wanted}


def _named(logged: Logged, keys: set[Key]) -> set[Key]:
    """Those of ``keys`` that ``logged`` mentions (``mentions``, for many keys)."""
    if isinstance(logged, PackedGraph | ev.UpdateGraph | ev.ScatterData):
        return {k for k in keys if mentions(logged, k)}
    named = {k for k in getattr(logged, "keys", ()) if k in keys}
    named |= {k for k in getattr(logged, "wanted", ()) if k in keys}
    key = getattr(logged, "key", None)
    if key is not None and key in keys:
        named.add(key)
    return named


@dataclass(frozen=True, slots=True)
class Recording:
    options: dict[str, Any]  # SchedulerState's constructor arguments
    stimuli: tuple[ev.Stimulus, ...]
    complete: bool  # True if no stimulus had rolled off the log


def record(state: SchedulerState) -> bytes:
    """``state``'s options and logged stimuli, as bytes for ``replay``."""
    stimuli = tuple(map(stimulus, state.stimuli))
    recording = Recording(dict(state.options), stimuli, len(stimuli) == state.stimuli_handled)
    return pickle.dumps(recording, protocol=pickle.HIGHEST_PROTOCOL)


def load(data: bytes) -> Recording:
    recording = pickle.loads(data)
    if not isinstance(recording, Recording):
        raise TypeError(f"not a scheduler recording: {type(recording).__name__}")
    return recording


def replay(recording: Recording | bytes) -> tuple[SchedulerState, list[ev.Action]]:
    """A fresh ``SchedulerState`` fed the recorded stimuli one at a time, and the
    actions it made. A recording that lost its oldest stimuli replays only the rest."""
    from corral.scheduler.state import SchedulerState

    if isinstance(recording, bytes):
        recording = load(recording)
    state = SchedulerState(**recording.options)
    actions: list[ev.Action] = []
    for stimulus in recording.stimuli:
        actions.extend(state.handle(stimulus))
    return state, actions
