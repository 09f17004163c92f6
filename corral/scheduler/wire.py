"""Messages on the workers' and clients' streams → scheduler stimuli, checked first.

The sender's identity comes from the stream it arrived on, never from the message.
Each op's fields are declared once, in ``corral.messages``, and every field is checked
against that declaration before the state machine sees anything: a malformed message
(unknown op, missing, unknown or mistyped fields, a value out of range) is dropped whole
with one log line naming what was wrong. A message from an older peer that carries no
``stimulus_id`` gets one from ``new_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from corral import messages as msgs
from corral.exceptions import InvalidMessage
from corral.scheduler import events as ev

logger = logging.getLogger("corral.scheduler")


def worker_message(worker: str, msg: Any, new_id: Callable[[], str]) -> msgs.FromWorker | None:
    """The message ``msg`` from ``worker`` is (a stimulus, or a heartbeat); None if malformed."""
    try:
        return msgs.read(msgs.FROM_WORKER, msg, new_id, worker=worker)
    except InvalidMessage as e:
        logger.warning("dropping a malformed message from worker %s: %s", worker, e)
        return None


def client_message(client: str, msg: Any, new_id: Callable[[], str],
                   now: float) -> msgs.FromClient | None:
    """The message ``msg`` from ``client`` is; None if malformed."""
    local: dict[str, Any] = {"client": client}
    if isinstance(msg, dict) and (msg.get("op") == msgs.UpdateGraph.op
                                  or msg.get("op") in msgs.TIMED_OPS):
        local["now"] = now
    try:
        message = msgs.read(msgs.FROM_CLIENT, msg, new_id, **local)
        if isinstance(message, msgs.Scatter):
            _check_scatter(message)
        return message
    except InvalidMessage as e:
        logger.warning("dropping a malformed message from client %s: %s", client, e)
        return None


def _check_scatter(msg: msgs.Scatter) -> None:
    if any(not holders for holders, _ in msg.placed.values()):
        raise InvalidMessage("scatter-data: a key placed on no worker")


def scatter_stimuli(msg: msgs.Scatter) -> list[ev.Stimulus]:
    """The first holder registers each key, the others hold replicas."""
    stimulus_id = msg.stimulus_id
    first = {k: (holders[0], nbytes) for k, (holders, nbytes) in msg.placed.items()}
    stimuli: list[ev.Stimulus] = [ev.ScatterData(stimulus_id=stimulus_id, client=msg.client,
                                                 placed=first)]
    for key, (holders, nbytes) in msg.placed.items():
        stimuli.extend(ev.AddKeys(stimulus_id=stimulus_id, worker=worker, keys={key: nbytes})
                       for worker in holders[1:])
    return stimuli
