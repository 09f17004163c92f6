"""What the servers do between the two state machines, without the network.

The scheduler server turns each action into a message on a worker's (or client's)
stream and the worker server turns that message back into a stimulus; the worker's
``SendToScheduler`` instructions are parsed by ``corral.scheduler.wire`` exactly as the
scheduler server parses them. Kept in one place so that a change of vocabulary is one
change here.
"""

from __future__ import annotations

from typing import Any

from corral.scheduler import events as sev
from corral.scheduler.wire import WORKER_OPS, Heartbeat, worker_message
from corral.worker import events as wev


def to_worker(action: sev.Action) -> wev.Stimulus | None:
    """The stimulus a worker's state machine receives for a scheduler ``action`` addressed
    to it; None for actions that go to clients or the log."""
    if isinstance(action, sev.ComputeTask):
        return wev.ComputeTask(
            stimulus_id=action.stimulus_id, key=action.key, run_spec=action.run_spec,
            who_has=action.who_has, nbytes=action.nbytes, priority=action.priority,
            resources=action.resources,
        )
    if isinstance(action, sev.FreeKeys):
        return wev.FreeKeys(stimulus_id=action.stimulus_id, keys=action.keys)
    if isinstance(action, sev.StealRequest):
        return wev.StealRequest(stimulus_id=action.stimulus_id, key=action.key)
    return None


def peer_removed(stimulus_id: str, peer: str) -> wev.Stimulus:
    """What every other worker hears when the scheduler removes ``peer``."""
    return wev.RemoveWorkerPeer(stimulus_id=stimulus_id, peer=peer)


def to_scheduler(worker: str, instruction: wev.SendToScheduler, *, trusted: bool = True,
                 ) -> sev.Stimulus | None:
    """The scheduler stimulus a worker's message becomes (the worker server adds the
    stimulus id to the message). The scheduler server checks every field of a message
    first; ``trusted`` skips those checks, which cost more than the scheduler's decision
    and can only fail for a message no ``WorkerState`` sends."""
    fields: dict[str, Any] = dict(instruction.msg)
    op = fields.pop("op")
    if op == "heartbeat":
        return None
    if trusted:  # our own state machine's output: the same stimulus, without the checks
        cls: Any = WORKER_OPS[op]
        return cls(stimulus_id=instruction.stimulus_id, worker=worker, **fields)
    stimulus = worker_message(worker, {**instruction.msg, "stimulus_id": instruction.stimulus_id})
    return None if isinstance(stimulus, Heartbeat) else stimulus
