"""The garbage collector's thresholds in a process that is only a scheduler.

Why: the state machine holds a record per task, linked to its inputs, dependents and
workers. With CPython's default thresholds (700, 10, 10) a young collection runs every
700 net allocations of container objects, so the stimuli and actions of one batch
(a ComputeTask, a report and their dicts and tuples per task, thousands of tasks a
batch) are still alive when it runs: they are promoted, and promoted objects count
towards full collections, each of which walks every task record. Driving a 10^5-task
graph (``bench/scale.py``'s ``drive``) made 11 full collections, a quarter of the
scheduler's CPU. With a young generation of ``YOUNG`` objects a batch's objects mostly
die young: one full collection, and the collector's share about halved.

Sound for a long-running server: thresholds change only *when* cyclic garbage is found,
never *whether*; what may wait longer is at most one young generation (``YOUNG``
objects, a few MB). Set only by ``corral scheduler``, a process of its own: a scheduler
run inside someone else's process (``LocalCluster``) leaves that process's settings alone.
"""

from __future__ import annotations

import gc

YOUNG = 50_000


def tune() -> None:
    """Raise the young generation's threshold to ``YOUNG``, unless it is higher already or
    0 (automatic collection off): the process's owner chose those."""
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG:
        gc.set_threshold(YOUNG, middle, old)
