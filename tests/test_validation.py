"""Every field a peer sends is checked at the boundary, before any state changes.

A refused registration leaves no trace; a malformed stream message costs one log line
and nothing else; the servers keep serving honest peers.
"""

from __future__ import annotations

import logging

import pytest

from corral.client.client import AsyncClient
from corral.core import rpc
from corral.core.validate import build
from corral.exceptions import InvalidMessage
from corral.scheduler import Scheduler
from corral.scheduler import events as ev
from corral.worker import Worker
from corral.worker import events as wev


def inc(x):
    return x + 1


GOOD = {"address": "tcp://127.0.0.1:1", "nthreads": 2, "memory_limit": 0, "resources": {},
        "name": "w", "pid": 1, "nanny": None}

BAD_REGISTRATIONS = {  # id: (the field named in the error, the bad value)
    "nthreads-text": ("nthreads", "abc"),
    "nthreads-negative": ("nthreads", -2),
    "nthreads-zero": ("nthreads", 0),
    "name-number": ("name", 5),
    "memory_limit-negative": ("memory_limit", -1),
    "resources-text": ("resources", {"GPU": "many"}),
    "address-list": ("address", ["tcp://x:1"]),
    "pid-text": ("pid", "1"),
}


@pytest.fixture
async def scheduler():
    async with Scheduler() as s:
        await s.listen("tcp://127.0.0.1:0")
        yield s


@pytest.mark.parametrize("case", BAD_REGISTRATIONS)
async def test_bad_registration_is_refused_and_leaves_no_ghost(scheduler, case):
    field, value = BAD_REGISTRATIONS[case]
    async with rpc(scheduler.address) as r:
        with pytest.raises(InvalidMessage, match=field):
            await r.__getattr__("register-worker")(**{**GOOD, field: value})
        info = await r.scheduler_info()
    assert info["workers"] == {}
    assert scheduler.worker_info == {}
    assert scheduler.worker_streams == {}
    assert scheduler.state.workers == {}


async def test_a_registration_missing_a_field_is_refused(scheduler):
    async with rpc(scheduler.address) as r:
        with pytest.raises(TypeError, match="nthreads"):
            await r.__getattr__("register-worker")(address="tcp://127.0.0.1:1")
        assert (await r.scheduler_info())["workers"] == {}


MALFORMED_FROM_WORKER = [
    {"op": "task-finished", "key": "x", "nbytes": "big"},
    {"op": "task-finished", "key": ["unhashable"], "nbytes": 1},
    {"op": "task-finished", "key": "x", "nbytes": -5},
    {"op": "task-finished", "key": "x", "nbytes": 1, "start": float("nan")},
    {"op": "task-erred", "key": "x"},
    {"op": "add-keys", "keys": ["x"]},
    {"op": "task-started", "key": "x", "extra": 1},
    {"op": "heartbeat", "transfers": [["peer", "soon", 1.0, 5]]},
    {"op": "heartbeat", "metrics": "hot"},
    {"op": "no-such-op"},
]

MALFORMED_FROM_CLIENT = [
    {"op": "update-graph", "tasks": [{"key": "k", "run_spec": b"", "retries": -1}],
     "wanted": ["k"]},
    {"op": "update-graph", "tasks": [{"key": "k", "run_spec": 5}], "wanted": ["k"]},
    {"op": "update-graph", "tasks": "k", "wanted": []},
    {"op": "scatter-data", "placed": {"k": [[], 5]}},
    {"op": "scatter-data", "placed": {"k": ["tcp://a:1", 5]}},
    {"op": "cancel-keys", "keys": 5},
    {"op": "client-releases-keys"},
]


async def test_malformed_stream_messages_cost_one_line_each_and_change_nothing(
        scheduler, caplog):
    async with Worker(scheduler.address, nthreads=1) as worker:
        await worker.start()
        async with AsyncClient(scheduler.address) as client:
            assert await client.submit(inc, 1) == 2  # both streams up
            before = (scheduler.state.info(), dict(scheduler.state.tasks))
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="corral"):
                for msg in MALFORMED_FROM_WORKER:
                    scheduler._from_worker(worker.address, msg)
                for msg in MALFORMED_FROM_CLIENT:
                    scheduler._from_client(client.id, msg)
            records = [r for r in caplog.records if r.name.startswith("corral.scheduler")]
            assert len(records) == len(MALFORMED_FROM_WORKER) + len(MALFORMED_FROM_CLIENT), [
                r.getMessage() for r in records]
            assert all(r.levelno == logging.WARNING and not r.exc_info for r in records)
            assert all("malformed" in r.getMessage() for r in records)
            assert (scheduler.state.info(), dict(scheduler.state.tasks)) == before
            scheduler.state.validate()
            assert await client.submit(inc, 2) == 3


async def test_the_real_streams_carry_malformed_messages_harmlessly(scheduler, caplog):
    """The same, sent over the wire by a worker and a client."""
    async with Worker(scheduler.address, nthreads=1) as worker:
        await worker.start()
        async with AsyncClient(scheduler.address) as client:
            with caplog.at_level(logging.WARNING, logger="corral"):
                worker.batched.send({"op": "task-finished", "key": "x", "nbytes": "big"})
                client._send_wire({"op": "update-graph", "tasks": 7, "wanted": []})
                assert await client.submit(inc, 4) == 5  # sent after: handled after
            lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
            assert len(lines) == 2, lines


async def test_the_worker_checks_what_the_scheduler_and_peers_send(scheduler, caplog):
    async with Worker(scheduler.address, nthreads=1) as worker:
        await worker.start()
        with caplog.at_level(logging.WARNING, logger="corral.worker"):
            assert worker._stimulus({"op": "compute-task", "key": "k", "run_spec": 5,
                                     "who_has": {}, "nbytes": {}, "priority": [0]}) is None
            assert worker._stimulus({"op": "free-keys", "keys": "k"}) is None
            assert worker._stimulus(["not", "a", "dict"]) is None
        warned = [r for r in caplog.records
                  if r.name == "corral.worker" and r.levelno >= logging.WARNING]
        assert len(warned) == 3, [r.getMessage() for r in warned]
        async with rpc(worker.address) as r:
            with pytest.raises(InvalidMessage, match="keys"):
                await r.get_data(keys=5)
            with pytest.raises(InvalidMessage, match="data"):
                await r.update_data(data=[1, 2])
            assert await r.update_data(data={"k": 1}) == {"k": 28}
            assert await r.get_data(keys=["k"]) == {"k": 1}


def test_build_converts_lists_to_declared_tuples_and_nests_dataclasses():
    graph = build(ev.UpdateGraph, {
        "stimulus_id": "s", "client": "c", "wanted": ["k", ("x", 1)],
        "tasks": [{"key": "k", "run_spec": b"f", "dependencies": [("x", 1)], "workers": ["w"]}],
    })
    assert graph.wanted == ("k", ("x", 1))
    assert graph.tasks == (ev.TaskSpec(key="k", run_spec=b"f", dependencies=(("x", 1),),
                                       workers=("w",)),)
    task = build(wev.ComputeTask, {"stimulus_id": "s", "key": "k", "run_spec": b"f",
                                   "who_has": {"d": ["w"]}, "nbytes": {"d": 3},
                                   "priority": [0, 1, 2.5]})
    assert task.who_has == {"d": ("w",)}
    assert task.priority == (0, 1, 2.5)
    with pytest.raises(InvalidMessage, match=r"TaskFinished.nbytes: expected an integer"):
        build(ev.TaskFinished, {"stimulus_id": "s", "worker": "w", "key": "k", "nbytes": True})
    with pytest.raises(InvalidMessage, match=r"missing field\(s\) key"):
        build(ev.TaskStarted, {"stimulus_id": "s", "worker": "w"})
