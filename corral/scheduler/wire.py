"""Messages on the workers' and clients' streams → scheduler stimuli.

The sender's identity comes from the stream it arrived on, never from the message.
A malformed message (unknown op, missing or extra fields) is logged and dropped.
"""

from __future__ import annotations

import logging
from typing import Any

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
    "client-releases-keys": ev.ClientReleasesKeys,
    "client-desires-keys": ev.ClientDesiresKeys,
    "cancel-keys": ev.CancelKeys,
}


def _build(cls: type[ev.Stimulus], fields: dict[str, Any], origin: str) -> ev.Stimulus | None:
    try:
        return cls(**fields)
    except TypeError as e:
        logger.warning("dropping malformed %s from %s: %s", cls.__name__, origin, e)
        return None


def worker_stimulus(worker: str, msg: dict[str, Any]) -> ev.Stimulus | None:
    fields = dict(msg)
    cls = WORKER_OPS.get(fields.pop("op", None))
    if cls is None:
        logger.warning("dropping unknown op %r from worker %s", msg.get("op"), worker)
        return None
    fields.setdefault("stimulus_id", f"{msg['op']}-{worker}")
    fields["worker"] = worker
    return _build(cls, fields, worker)


def client_stimulus(client: str, msg: dict[str, Any], now: float) -> ev.Stimulus | None:
    fields = dict(msg)
    op = fields.pop("op", None)
    fields.setdefault("stimulus_id", f"{op}-{client}")
    fields["client"] = client
    if op == "update-graph":
        try:
            tasks = tuple(_task_spec(t) for t in fields.pop("tasks"))
            wanted = tuple(fields.pop("wanted"))
        except (KeyError, TypeError, ValueError) as e:
            logger.warning("dropping malformed update-graph from %s: %s", client, e)
            return None
        return _build(
            ev.UpdateGraph, {**fields, "tasks": tasks, "wanted": wanted, "now": now}, client
        )
    cls = CLIENT_OPS.get(op)  # type: ignore[arg-type]
    if cls is None:
        logger.warning("dropping unknown op %r from client %s", op, client)
        return None
    if "keys" in fields:
        fields["keys"] = tuple(fields["keys"])
    return _build(cls, fields, client)


def _task_spec(fields: dict[str, Any]) -> ev.TaskSpec:
    fields = dict(fields)
    fields["dependencies"] = tuple(fields.get("dependencies", ()))
    if fields.get("workers") is not None:
        fields["workers"] = tuple(fields["workers"])
    return ev.TaskSpec(**fields)
