"""What the servers do between the two state machines, without the network.

The scheduler's actions for workers (``ComputeTask``, ``FreeKeys``, ``StealRequest``)
are the very messages, and the stimuli, the worker takes in (``corral.messages``); the
worker's ``SendToScheduler`` messages become the scheduler's stimuli once the receiver
has filled in the sender, as the scheduler server does from the stream they came on.
Kept in one place so that a change of vocabulary is one change here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from corral import messages as msgs
from corral.scheduler import events as sev
from corral.scheduler.wire import worker_message
from corral.worker import events as wev


def to_worker(action: sev.Action) -> tuple[str, wev.Stimulus] | None:
    """The worker an action goes to and the stimulus it is there, if it goes to one."""
    if isinstance(action, msgs.ToWorker) and isinstance(action, wev.Stimulus):
        return action.worker, action
    return None


def peer_removed(stimulus_id: str, peer: str) -> wev.Stimulus:
    """What every other worker hears when the scheduler drops ``peer``."""
    return msgs.RemoveWorkerPeer(stimulus_id=stimulus_id, peer=peer)


def to_scheduler(worker: str, instruction: wev.SendToScheduler, new_id: Callable[[], str],
                 *, trusted: bool = True) -> sev.Stimulus | None:
    """The scheduler stimulus a worker's message becomes; None for a heartbeat (the
    simulation's scheduler expires no worker, ``worker_ttl=None``).

    The scheduler server checks every field of a message off the wire first;
    ``trusted`` skips the round trip through the wire form and those checks, which cost
    more than the scheduler's decision and can only fail for a message no ``WorkerState``
    sends."""
    msg = instruction.msg
    if isinstance(msg, msgs.Heartbeat):
        return None
    received: msgs.FromWorker | None
    if trusted:
        received = dataclasses.replace(msg, worker=worker)
    else:
        received = worker_message(worker, msg.to_wire(), new_id)
    return received if isinstance(received, sev.Stimulus) else None
