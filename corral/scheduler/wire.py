"""Messages on the workers' and clients' streams → scheduler stimuli, checked first.

The sender's identity comes from the stream it arrived on, never from the message.
Each op's fields are declared once, by the stimulus it becomes (``events``) or by a
message type here, and every field is checked against that declaration
(``corral.core.validate``) before the state machine sees anything: a malformed message
(unknown op, missing, unknown or mistyped fields, a value out of range) is dropped whole
with one log line naming what was wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from corral.basic_types import Count, Key
from corral.core.validate import build
from corral.exceptions import InvalidMessage
from corral.scheduler import events as ev

logger = logging.getLogger("corral.scheduler")

WORKER_OPS: dict[str, type[ev.Stimulus]] = {
    "task-started": ev.TaskStarted,
    "task-finished": ev.TaskFinished,
    "task-erred": ev.TaskErred,
    "add-keys": ev.AddKeys,
    "missing-data": ev.MissingData,
    "release-worker-data": ev.ReleaseWorkerData,
    "steal-response": ev.StealResponse,
}

CLIENT_OPS: dict[str, type[ev.Stimulus]] = {
    "update-graph": ev.UpdateGraph,
    "client-releases-keys": ev.ClientReleasesKeys,
    "client-desires-keys": ev.ClientDesiresKeys,
    "cancel-keys": ev.CancelKeys,
    "missing-data": ev.ClientMissingData,
}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A worker's periodic sign of life: its metrics, and the transfers it made since."""

    metrics: dict[str, Any] = field(default_factory=dict)
    transfers: tuple[tuple[str, float, float, Count], ...] = ()  # (peer, start, stop, nbytes)
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class Scatter:
    """A client put data on workers itself: ``placed[key] = (holders, nbytes)``."""

    placed: dict[Key, tuple[tuple[str, ...], Count]]
    stimulus_id: str = ""


def worker_message(worker: str, msg: dict[str, Any]) -> ev.Stimulus | Heartbeat | None:
    """The stimulus (or heartbeat) ``msg`` from ``worker`` stands for; None if malformed."""
    fields = dict(msg)
    op = fields.pop("op", None)
    try:
        if op == "heartbeat":
            return build(Heartbeat, fields)
        cls = WORKER_OPS.get(op)
        if cls is None:
            raise InvalidMessage(f"unknown op {op!r}")
        fields.setdefault("stimulus_id", f"{op}-{worker}")
        return build(cls, {**fields, "worker": worker})
    except InvalidMessage as e:
        logger.warning("dropping a malformed message from worker %s: %s", worker, e)
        return None


def client_stimuli(client: str, msg: dict[str, Any], now: float) -> list[ev.Stimulus]:
    """The stimuli ``msg`` from ``client`` stands for; none if it is malformed."""
    fields = dict(msg)
    op = fields.pop("op", None)
    fields.setdefault("stimulus_id", f"{op}-{client}")
    try:
        if op == "scatter-data":
            return _scatter(client, build(Scatter, fields))
        cls = CLIENT_OPS.get(op)
        if cls is None:
            raise InvalidMessage(f"unknown op {op!r}")
        if cls is ev.UpdateGraph:
            fields["now"] = now
        return [build(cls, {**fields, "client": client})]
    except InvalidMessage as e:
        logger.warning("dropping a malformed message from client %s: %s", client, e)
        return []


def _scatter(client: str, msg: Scatter) -> list[ev.Stimulus]:
    """The first holder registers each key, the others hold replicas."""
    if any(not holders for holders, _ in msg.placed.values()):
        raise InvalidMessage("scatter-data: a key placed on no worker")
    stimulus_id = msg.stimulus_id
    first = {k: (holders[0], nbytes) for k, (holders, nbytes) in msg.placed.items()}
    stimuli: list[ev.Stimulus] = [ev.ScatterData(stimulus_id=stimulus_id, client=client,
                                                 placed=first)]
    for key, (holders, nbytes) in msg.placed.items():
        stimuli.extend(ev.AddKeys(stimulus_id=stimulus_id, worker=worker, keys={key: nbytes})
                       for worker in holders[1:])
    return stimuli
