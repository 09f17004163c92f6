"""The wire vocabulary (``corral.messages``): every op round-trips, every message has one
reader and one handler, malformed ones are refused, and stimulus ids name their origin.

The messages are enumerated from the module, so a new one cannot be left out.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import types
import typing
from collections.abc import Hashable
from typing import Annotated, Any, Union

import pytest

from corral import messages as msgs
from corral.client.client import AsyncClient
from corral.client.reports import REPORTS
from corral.exceptions import InvalidMessage, UnknownStimulus
from corral.protocol import MessageCodec
from corral.scheduler import Scheduler
from corral.scheduler import events as ev
from corral.scheduler.server import Scheduler as SchedulerServer
from corral.scheduler.wire import client_message, worker_message
from corral.worker import Worker
from corral.worker import events as wev
from corral.worker.server import Worker as WorkerServer
from corral.worker.state import HANDLERS as WORKER_HANDLERS

MESSAGES = sorted(
    (obj for obj in vars(msgs).values()
     if isinstance(obj, type) and issubclass(obj, msgs.Message) and "op" in vars(obj)),
    key=lambda cls: cls.__name__,
)
TABLES = {"to worker": msgs.TO_WORKER, "from worker": msgs.FROM_WORKER,
          "to client": msgs.TO_CLIENT, "from client": msgs.FROM_CLIENT}
DIRECTIONS = {"to worker": msgs.ToWorker, "from worker": msgs.FromWorker,
              "to client": msgs.ToClient, "from client": msgs.FromClient}
PEERS = {msgs.ToWorker: "worker", msgs.FromWorker: "worker", msgs.ToClient: "client",
         msgs.FromClient: "client"}
NO_PICKLE = MessageCodec(allow_pickle=False)  # the scheduler never unpickles a message


def sample(hint: Any, n: int = 0) -> Any:
    """A value of the declared type that is not its default, so it has to travel."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return sample(args[0], n)
    if origin in (Union, types.UnionType):
        return sample(next(a for a in args if a is not type(None)), n)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return (sample(args[0], n), sample(args[0], n + 1))
        return tuple(sample(a, n + i) for i, a in enumerate(args))
    if origin is dict:
        return {sample(args[0], n): sample(args[1], n)}
    if dataclasses.is_dataclass(hint):
        return hint(**{f.name: sample(h, n) for f, h in _hints(hint)})
    simple = {Hashable: ("key", n), str: f"s{n}", bytes: b"b%d" % n, int: 3 + n,
              float: 1.5 + n, bool: True, Any: {"any": [n]}}
    return simple[hint]


def _hints(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def example(cls: type[msgs.Message]) -> msgs.Message:
    fields = {f.name: sample(h, i) for i, (f, h) in enumerate(_hints(cls))}
    return cls(**fields)


def test_the_module_declares_messages_in_each_direction():
    assert len(MESSAGES) >= 24
    assert {cls.op for cls in msgs.FROM_CLIENT.values()} >= {
        "update-graph", "client-releases-keys", "client-desires-keys", "cancel-keys",
        "missing-data", "scatter-data", "close-client"}


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda cls: cls.__name__)
def test_every_message_is_in_exactly_one_table_of_its_direction(cls):
    homes = [name for name, table in TABLES.items() if table.get(cls.op) is cls]
    assert len(homes) == 1, homes
    assert issubclass(cls, DIRECTIONS[homes[0]])


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda cls: cls.__name__)
def test_every_message_round_trips_through_the_wire(cls):
    message = example(cls)
    wire = message.to_wire()
    assert wire["op"] == cls.op
    assert not cls.local_fields & wire.keys()  # the peer field is the stream's, not the wire's
    local = {name: getattr(message, name) for name in cls.local_fields}
    travelled = NO_PICKLE.decode(NO_PICKLE.encode(wire))
    table = next(t for t in TABLES.values() if t.get(cls.op) is cls)
    assert msgs.read(table, travelled, lambda: "unused", **local) == message


def test_the_wire_form_is_the_one_peers_have_always_spoken():
    task = msgs.ComputeTask(stimulus_id="s", worker="tcp://w:1", key="k", run_spec=b"f",
                            who_has={"d": ("tcp://v:1",)}, nbytes={"d": 3}, priority=(0, 1))
    assert task.to_wire() == {"op": "compute-task", "stimulus_id": "s", "key": "k",
                              "run_spec": b"f", "who_has": {"d": ("tcp://v:1",)},
                              "nbytes": {"d": 3}, "priority": (0, 1), "resources": None}
    graph = msgs.UpdateGraph(stimulus_id="c-1", tasks=(
        msgs.TaskSpec(key="k", run_spec=b"f", dependencies=("d",), name="inc", retries=2),),
        wanted=("k",))
    # A task's options at their defaults stay off the wire (every reader fills them in),
    # and so do shared functions when there are none: earlier schedulers read it all.
    assert graph.to_wire() == {"op": "update-graph", "stimulus_id": "c-1", "report_start": False,
                               "wanted": ("k",), "tasks": [{
                                   "key": "k", "run_spec": b"f", "dependencies": ("d",),
                                   "retries": 2, "name": "inc"}]}
    every = msgs.TaskSpec(key="k", run_spec=b"f", dependencies=("d",), priority=1,
                          workers=("tcp://w:1",), allow_other_workers=True, retries=2,
                          resources={"GPU": 1.0}, name="inc", function=0)
    assert every.to_wire() == {f.name: getattr(every, f.name)
                               for f in dataclasses.fields(every)}
    assert msgs.read(msgs.FROM_CLIENT, graph.to_wire(), lambda: "unused") == graph
    ack = msgs.HeartbeatAck(stimulus_id="h", worker="tcp://w:1")
    assert ack.to_wire() == {"op": "heartbeat-ack", "stimulus_id": "h"}


# Messages as the peers before this vocabulary spelled them (no ids on most).
EARLIER_PEERS = [
    (msgs.TO_WORKER, {"op": "compute-task", "key": "k", "run_spec": b"f", "who_has": {},
                      "nbytes": {}, "priority": [0, 1], "resources": None,
                      "stimulus_id": "graph-c"}),
    (msgs.TO_WORKER, {"op": "free-keys", "keys": ["k"], "stimulus_id": "rel-c"}),
    (msgs.TO_WORKER, {"op": "steal-request", "key": "k", "stimulus_id": "cancel-c"}),
    (msgs.TO_WORKER, {"op": "remove-worker-peer", "peer": "tcp://p:1"}),
    (msgs.TO_WORKER, {"op": "heartbeat-ack"}),
    (msgs.FROM_WORKER, {"op": "task-finished", "key": "k", "nbytes": 8, "typename": "int",
                        "start": 1.0, "stop": 2.0, "stimulus_id": "execute-k-2.0"}),
    (msgs.FROM_WORKER, {"op": "add-keys", "keys": {"k": 8}, "stimulus_id": "gather-p-1.0"}),
    (msgs.FROM_WORKER, {"op": "heartbeat", "metrics": {"cpu": 1.0},
                        "transfers": [["tcp://p:1", 1.0, 2.0, 8]]}),
    (msgs.TO_CLIENT, {"op": "key-in-memory", "key": "k", "who_has": ["tcp://w:1"],
                      "nbytes": 8, "typename": "int"}),
    (msgs.TO_CLIENT, {"op": "task-erred", "key": "k", "exception": b"", "traceback": b"",
                      "exception_text": "E: x", "traceback_text": ""}),
    (msgs.TO_CLIENT, {"op": "task-started", "key": "k"}),
    (msgs.TO_CLIENT, {"op": "cancelled", "key": "k", "reason": "cancelled"}),
    (msgs.FROM_CLIENT, {"op": "update-graph", "wanted": ["k"], "report_start": True, "tasks": [
        {"key": "k", "run_spec": b"f", "dependencies": [], "name": "inc", "workers": None,
         "allow_other_workers": False, "retries": 0, "priority": 0, "resources": None}]}),
    (msgs.FROM_CLIENT, {"op": "client-releases-keys", "keys": ["k"]}),
    (msgs.FROM_CLIENT, {"op": "cancel-keys", "keys": ["k"], "unstarted_only": True}),
    (msgs.FROM_CLIENT, {"op": "scatter-data", "placed": {"k": [["tcp://w:1"], 8]}}),
    (msgs.FROM_CLIENT, {"op": "close-client"}),
]


@pytest.mark.parametrize(("table", "msg"), EARLIER_PEERS,
                         ids=[msg["op"] for _, msg in EARLIER_PEERS])
def test_messages_of_earlier_peers_are_read_and_written_back_the_same(table, msg):
    peer = {"client": "c"} if table is msgs.TO_CLIENT else {}  # ToClient's has no default
    message = msgs.read(table, msg, lambda: "made-here", **peer)
    assert message.stimulus_id == msg.get("stimulus_id", "made-here")
    wire = message.to_wire()
    for name, value in msg.items():  # what they sent is what we send, lists read as tuples
        if name != "tasks":
            assert wire[name] == _tuples(value), name
    assert table[message.to_wire()["op"]] is type(message)


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


# -- handlers ------------------------------------------------------------------------------


def test_every_worker_stimulus_has_exactly_one_handler():
    stimuli = {obj for module in (msgs, wev) for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, msgs.WorkerStimulus)
               and obj is not msgs.WorkerStimulus}
    assert set(WORKER_HANDLERS) == stimuli


def test_an_unknown_stimulus_is_refused_by_the_worker_state_machine_by_name():
    from corral.worker.state import WorkerState

    @dataclasses.dataclass(frozen=True, slots=True)
    class Unheard(msgs.WorkerStimulus):
        pass

    with pytest.raises(UnknownStimulus, match="no worker handler for Unheard"):
        WorkerState("tcp://me:1", 1).handle(Unheard(stimulus_id="u"))


@pytest.mark.parametrize(("table", "server", "role"), [
    (msgs.FROM_WORKER, SchedulerServer, msgs.SchedulerStimulus),
    (msgs.FROM_CLIENT, SchedulerServer, msgs.SchedulerStimulus | msgs.CoordinationStimulus),
    (msgs.TO_WORKER, WorkerServer, msgs.WorkerStimulus),
], ids=["scheduler-from-worker", "scheduler-from-client", "worker-from-scheduler"])
def test_every_message_a_server_reads_is_either_its_own_or_a_stimulus(table, server, role):
    for cls in table.values():
        own = cls in server.OWN_MESSAGES
        assert own != issubclass(cls, role), cls.__name__
    assert set(server.OWN_MESSAGES) <= set(msgs.TO_WORKER.values()) | set(
        msgs.FROM_WORKER.values()) | set(msgs.FROM_CLIENT.values())


def test_every_report_has_one_client_handler_and_every_action_a_destination():
    # Coordination replies answer requests (corral.client.requests), not keys.
    assert set(REPORTS) | {msgs.CoordinationReply} == set(msgs.TO_CLIENT.values())
    actions = {obj for module in (msgs, ev) for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, msgs.SchedulerAction)
               and obj is not msgs.SchedulerAction}
    for action in actions - set(ev.SERVER_ACTIONS):  # carried out by the server itself
        assert issubclass(action, msgs.ToWorker | msgs.ToClient), action


# -- refusing ------------------------------------------------------------------------------


REFUSED = [  # (message, what the one line says)
    (["not", "a", "mapping"], "expected a message"),
    ({"key": "x"}, "unknown op None"),
    ({"op": ["task-finished"]}, "unknown op"),
    ({"op": "compute-task"}, "unknown op 'compute-task'"),  # not a worker's to send
    ({"op": "task-started", "key": "x", "worker": "tcp://someone-else:1"}, "worker"),
    ({"op": "task-started", "key": "x", "stimulus_id": 5}, "stimulus_id"),
    ({"op": "task-finished", "key": "x", "nbytes": -1}, "nbytes"),
]


@pytest.mark.parametrize(("msg", "says"), REFUSED)
def test_a_malformed_message_is_refused_with_one_line(msg, says, caplog):
    with caplog.at_level(logging.WARNING, logger="corral.scheduler"):
        assert worker_message("tcp://w:1", msg, msgs.StimulusIds("sched")) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "malformed message from worker tcp://w:1" in line
    assert says in line
    assert not caplog.records[0].exc_info


def test_a_client_may_not_name_another_client_or_the_time():
    with pytest.raises(InvalidMessage, match="client"):
        msgs.read(msgs.FROM_CLIENT, {"op": "client-releases-keys", "keys": [],
                                     "client": "someone-else"}, lambda: "x", client="me")
    assert client_message("me", {"op": "update-graph", "tasks": [], "wanted": [],
                                 "now": 0.0}, lambda: "x", now=5.0) is None


# -- stimulus ids --------------------------------------------------------------------------


def test_stimulus_ids_are_origin_and_counter():
    ids = msgs.StimulusIds("client-abc")
    assert [ids(), ids(), ids()] == ["client-abc-1", "client-abc-2", "client-abc-3"]


def test_a_message_of_an_older_peer_without_an_id_gets_one_from_the_receiver():
    ids = msgs.StimulusIds("scheduler-1")
    first = worker_message("tcp://w:1", {"op": "task-started", "key": "x"}, ids)
    second = client_message("c", {"op": "cancel-keys", "keys": ["x"]}, ids, now=1.0)
    assert (first.stimulus_id, second.stimulus_id) == ("scheduler-1-1", "scheduler-1-2")
    sent = worker_message("tcp://w:1", {"op": "task-started", "key": "x",
                                        "stimulus_id": "tcp://w:1-7"}, ids)
    assert sent == ev.TaskStarted(stimulus_id="tcp://w:1-7", worker="tcp://w:1", key="x")


def slow_inc(x):
    time.sleep(0.05)
    return x + 1


def inc(x):
    return x + 1


async def test_clients_and_workers_send_their_own_distinct_ids():
    async with Scheduler() as scheduler:
        await scheduler.listen("tcp://127.0.0.1:0")
        seen: list[Any] = []
        handle = scheduler.state.handle

        def recording(*stimuli):
            seen.extend(stimuli)
            return handle(*stimuli)

        scheduler.state.handle = recording  # type: ignore[method-assign]
        async with Worker(scheduler.address, nthreads=1) as worker:
            await worker.start()
            async with AsyncClient(scheduler.address) as client:
                # long enough for each start report to go before its result (a short
                # task's is taken back when the result follows at once)
                assert await client.submit(slow_inc, 1) == 2
                assert await client.submit(slow_inc, 2) == 3
    graphs = [s.stimulus_id for s in seen if isinstance(s, ev.UpdateGraph)]
    assert len(graphs) == len(set(graphs)) == 2
    assert all(sid.startswith(f"{client.id}-") for sid in graphs)
    finished = [s.stimulus_id for s in seen if isinstance(s, ev.TaskFinished)]
    assert len(finished) == len(set(finished)) == 2
    assert all(sid.startswith(f"{worker.address}-") for sid in finished)
    started = [s for s in seen if isinstance(s, ev.TaskStarted)]
    assert {s.stimulus_id for s in started} == set(graphs)  # caused by the client's graphs


def test_a_graph_naming_a_function_it_does_not_carry_is_refused(caplog):
    from corral.scheduler.wire import client_message

    graph = {"op": "update-graph", "stimulus_id": "c-1", "wanted": ["k"], "functions": [b"f"],
             "tasks": [{"key": "k", "run_spec": b"a", "dependencies": [], "function": 1}]}
    assert client_message("c", graph, lambda: "unused", now=0.0) is None
    assert "names function 1 of 1" in caplog.text
    graph["tasks"][0]["function"] = 0
    read = client_message("c", graph, lambda: "unused", now=0.0)
    assert read is not None
    assert read.tasks[0].function == 0
