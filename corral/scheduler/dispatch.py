"""Which handler each stimulus type goes to: one explicit table, checked by a test.

``SchedulerState.handle`` looks the stimulus's exact type up here; a type missing from
the table is refused with ``UnknownStimulus`` rather than guessed from its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral.scheduler import client_handlers as clients
from corral.scheduler import events as ev
from corral.scheduler import replication, retirement
from corral.scheduler import worker_handlers as workers

if TYPE_CHECKING:
    from corral.scheduler.state import SchedulerState

Handler = Callable[["SchedulerState", Any], None]

HANDLERS: dict[type[ev.Stimulus], Handler] = {
    # from clients
    ev.UpdateGraph: clients.update_graph,
    ev.ClientDesiresKeys: clients.client_desires_keys,
    ev.ClientReleasesKeys: clients.client_releases_keys,
    ev.CancelKeys: clients.cancel_keys,
    ev.FireAndForget: clients.fire_and_forget,
    ev.RetryKeys: clients.retry_keys,
    ev.RemoveClient: clients.remove_client,
    ev.ClientConnected: clients.client_connected,
    ev.ClientDisconnected: clients.client_disconnected,
    ev.ScatterData: clients.scatter_data,
    ev.ClientMissingData: clients.client_missing_data,
    # from workers
    ev.AddWorker: workers.add_worker,
    ev.RemoveWorker: workers.remove_worker,
    ev.WorkerHeartbeat: workers.worker_heartbeat,
    ev.TaskStarted: workers.task_started,
    ev.TaskSeceded: workers.task_seceded,
    ev.TaskRejoined: workers.task_rejoined,
    ev.TaskFinished: workers.task_finished,
    ev.TaskErred: workers.task_erred,
    ev.AddKeys: workers.add_keys,
    ev.ReleaseWorkerData: workers.release_worker_data,
    ev.MissingData: workers.missing_data,
    ev.StealResponse: workers.steal_response,
    # retiring workers gracefully
    ev.RetireWorkers: retirement.retire_workers,
    ev.RetireMe: retirement.retire_me,
    ev.Replicate: replication.replicate,
    ev.WorkerPaused: workers.worker_paused,
    # from the clock
    ev.Tick: workers.tick,
}
