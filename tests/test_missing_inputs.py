"""An input a worker cannot fetch from anyone must be reported, or the task hangs.

Under chaos (workers SIGKILLed while a graph runs) a worker could be left with a task
whose input had no holder it knew of: the scheduler named only the worker itself (which
had just dropped its copy), or the only holder it named died before the transfer began
(the scheduler knew of a copy made since). The input went ``missing`` without a word,
and the scheduler went on believing the task under way: the graph never finished.
Both machines are driven by hand here, without sockets.
"""

from __future__ import annotations

from corral import messages as msgs
from corral.scheduler import events as sev
from corral.scheduler.state import SchedulerState
from corral.worker import events as wev
from corral.worker.state import WS, WorkerState

ME, P1, P2 = "tcp://me:1", "tcp://p1:1", "tcp://p2:1"


def compute(key, who_has):
    return wev.ComputeTask(stimulus_id=f"c-{key}", key=key, run_spec=b"", who_has=who_has,
                           nbytes={d: 10 for d in who_has}, priority=(0,))


def told(instructions):
    return [i.msg for i in instructions if isinstance(i, wev.SendToScheduler)]


def test_an_input_said_to_be_only_here_but_gone_is_reported_missing():
    ws = WorkerState(ME, 1)
    out = ws.handle(compute("y", {"x": (ME,)}))
    assert ws.tasks["x"].state == WS.MISSING
    assert told(out) == [msgs.MissingData(stimulus_id="c-y", key="x", errant_worker=ME)]


def test_an_input_whose_last_known_holder_leaves_before_the_transfer_is_reported():
    ws = WorkerState(ME, 1, max_concurrent_transfers=1)
    ws.handle(compute("y", {"x": (P1,), "z": (P2,)}))
    waiting = next(k for k in ("x", "z") if ws.tasks[k].state == WS.FETCH)
    holder = P1 if waiting == "x" else P2
    out = ws.handle(msgs.RemoveWorkerPeer(stimulus_id="gone", peer=holder))
    assert ws.tasks[waiting].state == WS.MISSING
    assert told(out) == [msgs.MissingData(stimulus_id="gone", key=waiting,
                                          errant_worker=holder)]
    ws.validate()


def test_the_scheduler_sends_the_task_again_with_the_holders_it_knows_now():
    """End to end: x on A and B (B fetched it after y was sent to C naming only A); A
    dies; C, told so, reports x missing; the scheduler resends y naming B."""
    A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"
    s = SchedulerState(default_duration=0.5)
    for w in (A, B, C):
        s.handle(sev.AddWorker(stimulus_id=f"add-{w}", address=w, nthreads=1))
    s.handle(sev.UpdateGraph(stimulus_id="g", client="cl", tasks=(
        sev.TaskSpec(key="x", run_spec=b"x"),), wanted=("x",)))
    runs_x = s.tasks["x"].processing_on
    assert runs_x is not None
    s.handle(sev.TaskFinished(stimulus_id="fx", worker=runs_x.address, key="x",
                              nbytes=10**9, typename="int", start=0, stop=1))
    holder = runs_x.address
    others = [w for w in (A, B, C) if w != holder]
    # y goes to a worker that must fetch x from its one holder; it says which.
    s.handle(sev.UpdateGraph(stimulus_id="g2", client="cl", tasks=(
        sev.TaskSpec(key="y", run_spec=b"y", dependencies=("x",)),), wanted=("y",),
        ))
    ws_y = s.tasks["y"].processing_on
    assert ws_y is not None
    runner = ws_y.address if ws_y.address != holder else others[0]
    if ws_y.address == holder:  # placed on the holder itself: move it by hand
        s.unassign(s.tasks["y"])
        s.placement.add_processing(s.tasks["y"], s.workers[runner])
    copier = next(w for w in others if w != runner)
    s.handle(sev.AddKeys(stimulus_id="copy", worker=copier, keys={"x": 10**9}))
    s.handle(sev.RemoveWorker(stimulus_id="dies", address=holder))
    assert s.task_state("y") == "processing"  # x still has a copy: nothing looks lost
    actions = s.handle(msgs.MissingData(stimulus_id="m", worker=runner, key="x",
                                        errant_worker=holder))
    resent = [a for a in actions if isinstance(a, sev.ComputeTask) and a.key == "y"]
    assert len(resent) == 1
    assert resent[0].who_has == {"x": (copier,)}
    s.validate()


def test_stories_of_many_keys_at_once_tell_what_story_tells_of_each():
    """A stuck run asks for the stories of thousands of keys: one pass over the logs."""
    import random

    from corral.scheduler import stimulus_log
    from corral.simulation.cluster import Simulation
    from corral.simulation.graphs import chains

    sim = Simulation(4, seed=1)
    sim.submit(chains(200, random.Random(1)))
    sim.kill(0.2)
    sim.run()
    state = sim.scheduler
    keys = [*list(state.tasks)[:50], "never-seen"]
    assert stimulus_log.stories(state, keys) == {k: state.story(k) for k in keys}
    assert any(stimulus_log.stories(state, keys).values())
