"""The coordination state machine, without sockets: requests in, exact actions out, and
time only as the stimuli carry it."""

from __future__ import annotations

import itertools

import pytest

from corral import messages as msgs
from corral.exceptions import UnknownStimulus
from corral.scheduler.coordination import HOLDER, Coordination, HolderGone, UnwantKeys, WantKeys
from corral.scheduler.events import Tick

_ids = itertools.count()


def req(cls, client, request, name, now=0.0, **fields):
    return cls(stimulus_id=f"s{next(_ids)}", client=client, request=request, name=name,
               now=now, **fields)


def handle(machine, *stimuli):
    actions = machine.handle(*stimuli)
    machine.validate()
    return actions


def replies(actions):
    """(client, request, outcome, value) of each reply, in order."""
    return [(a.client, a.request, a.outcome, a.value) for a in actions
            if isinstance(a, msgs.CoordinationReply)]


def acquire(client, request, name="db", now=0.0, timeout=None, lease=None, kind="lock",
            max_leases=1):
    return req(msgs.AcquireLease, client, request, name, now, kind=kind,
               lease=lease or f"{client}-{request}", max_leases=max_leases, timeout=timeout)


def tick(now):
    return Tick(stimulus_id=f"t{now}", now=now)


@pytest.fixture
def m():
    return Coordination(lease_timeout=30.0)


# -- locks and semaphores -----------------------------------------------------------------


def test_a_lock_is_granted_to_one_holder_and_passed_on_first_come_first_served(m):
    assert replies(handle(m, acquire("a", 1))) == [("a", 1, "ok", 30.0)]
    assert handle(m, acquire("b", 1), acquire("c", 1)) == []  # both wait
    out = handle(m, req(msgs.ReleaseLease, "a", 2, "db", kind="lock", lease="a-1"))
    assert replies(out) == [("b", 1, "ok", 30.0), ("a", 2, "ok", True)]
    assert replies(handle(m, req(msgs.Inspect, "a", 3, "db", kind="lock"))) == [
        ("a", 3, "ok", 1)]


def test_a_wait_times_out_on_the_first_tick_past_its_deadline(m):
    handle(m, acquire("a", 1))
    assert handle(m, acquire("b", 1, now=10.0, timeout=2.0)) == []
    assert handle(m, tick(11.9)) == []
    assert replies(handle(m, tick(12.0))) == [("b", 1, "timeout", None)]
    assert not m.waits


def test_a_zero_timeout_is_answered_at_once(m):
    handle(m, acquire("a", 1))
    assert replies(handle(m, acquire("b", 1, timeout=0.0))) == [("b", 1, "timeout", None)]
    assert not m.waits


def test_leases_of_a_holder_that_goes_away_pass_to_the_next_waiter(m):
    handle(m, acquire("a", 1), acquire("b", 1))
    handle(m, acquire("a", 2, name="other"))
    out = handle(m, HolderGone(stimulus_id="gone", client="a"))
    assert replies(out) == [("b", 1, "ok", 30.0)]
    assert list(m.holders) == ["b"]
    assert ("lock", "other") not in m.semaphores  # forgotten once empty


def test_a_holder_gone_while_waiting_is_never_granted(m):
    handle(m, acquire("a", 1), acquire("b", 1))
    assert handle(m, HolderGone(stimulus_id="gone", client="b")) == []
    assert replies(handle(m, req(msgs.ReleaseLease, "a", 2, "db", kind="lock",
                                 lease="a-1"))) == [("a", 2, "ok", True)]
    assert not m.semaphores


def test_a_silent_holder_loses_its_lease_after_the_lease_timeout(m):
    handle(m, acquire("a", 1, now=100.0), acquire("b", 1, now=100.0))
    handle(m, req(msgs.Inspect, "a", 2, "db", now=110.0, kind="lock"))  # a was seen at 110
    assert replies(handle(m, tick(140.0))) == []
    handle(m, msgs.RefreshLeases(stimulus_id="r", client="a", now=141.0))
    assert replies(handle(m, tick(171.0))) == []
    assert replies(handle(m, tick(171.5))) == [("b", 1, "ok", 30.0)]
    # Its release, too late, says so.
    out = handle(m, req(msgs.ReleaseLease, "a", 3, "db", now=172.0, kind="lock", lease="a-1"))
    assert replies(out) == [("a", 3, "ok", False)]


def test_a_semaphore_grants_up_to_max_leases_and_refuses_another_max(m):
    sem = {"kind": "semaphore", "name": "s", "max_leases": 2}
    assert [r[2] for r in replies(handle(m, acquire("a", 1, **sem), acquire("b", 1, **sem),
                                         acquire("c", 1, **sem)))] == ["ok", "ok"]
    out = handle(m, acquire("d", 1, kind="semaphore", name="s", max_leases=3))
    assert replies(out) == [("d", 1, "error", "ValueError")]
    assert "max_leases=2" in out[0].error


def test_the_same_lease_acquired_again_is_granted_again(m):
    handle(m, acquire("a", 1, lease="L"))
    assert replies(handle(m, acquire("a", 2, lease="L"))) == [("a", 2, "ok", 30.0)]


def test_a_cancelled_wait_gets_no_reply_and_leaves_nothing(m):
    handle(m, acquire("a", 1), acquire("b", 1))
    assert handle(m, msgs.CancelWait(stimulus_id="c", client="b", request=1)) == []
    assert not m.waits
    assert handle(m, msgs.CancelWait(stimulus_id="c2", client="b", request=1)) == []


def test_a_request_number_already_waiting_is_refused(m):
    handle(m, acquire("a", 1), acquire("b", 1))
    out = handle(m, req(msgs.WaitEvent, "b", 1, "e"))
    assert replies(out) == [("b", 1, "error", "ValueError")]
    assert list(m.waits) == [("b", 1)]


# -- events ---------------------------------------------------------------------------------


def test_setting_an_event_wakes_every_waiter_and_later_waits_return_at_once(m):
    assert handle(m, req(msgs.WaitEvent, "a", 1, "e"), req(msgs.WaitEvent, "b", 1, "e")) == []
    out = handle(m, req(msgs.SetEvent, "c", 1, "e", value=True))
    assert replies(out) == [("a", 1, "ok", True), ("b", 1, "ok", True), ("c", 1, "ok", None)]
    assert replies(handle(m, req(msgs.WaitEvent, "a", 2, "e"))) == [("a", 2, "ok", True)]
    handle(m, req(msgs.SetEvent, "c", 2, "e", value=False))
    assert not m.events  # cleared and unwatched: forgotten
    assert replies(handle(m, req(msgs.WaitEvent, "a", 3, "e", now=5.0, timeout=1.0),
                          tick(6.0))) == [("a", 3, "timeout", None)]


# -- variables, queues and the keys they hold -----------------------------------------------


def item(data, *keys):
    return (data, tuple(keys))


def test_a_variable_holds_its_futures_keys_and_hands_them_over_before_letting_go(m):
    out = handle(m, req(msgs.SetVariable, "a", 1, "v", item=item(b"f", "k1")))
    assert [type(a) for a in out] == [WantKeys, msgs.CoordinationReply]
    assert out[0].client == HOLDER
    assert out[0].keys == ("k1",)
    out = handle(m, req(msgs.GetVariable, "b", 1, "v"))
    assert out[0].items == (item(b"f", "k1"),)
    assert out[1] == WantKeys(out[1].stimulus_id, "b", ("k1",))
    out = handle(m, req(msgs.SetVariable, "a", 2, "v", item=item(b"g", "k2")))
    assert [(type(a).__name__, getattr(a, "keys", None)) for a in out] == [
        ("WantKeys", ("k2",)), ("UnwantKeys", ("k1",)), ("CoordinationReply", None)]
    out = handle(m, req(msgs.SetVariable, "a", 3, "v", item=None))
    assert out[0] == UnwantKeys(out[0].stimulus_id, HOLDER, ("k2",))
    assert not m.variables
    assert not m.held


def test_a_get_waits_for_the_variable_to_be_set(m):
    assert handle(m, req(msgs.GetVariable, "b", 1, "v")) == []
    out = handle(m, req(msgs.SetVariable, "a", 1, "v", item=item(b"x")))
    assert replies(out) == [("b", 1, "ok", None), ("a", 1, "ok", None)]
    assert out[0].items == (item(b"x"),)


def test_a_queue_serves_items_in_order_singly_in_batches_and_all_at_once(m):
    for i in range(5):
        handle(m, req(msgs.PutQueue, "a", i, "q", item=item(b"%d" % i)))
    out = handle(m, req(msgs.GetQueue, "b", 1, "q"), req(msgs.GetQueue, "b", 2, "q", count=2),
                 req(msgs.GetQueue, "b", 3, "q", count=0))
    assert [[d for d, _ in a.items] for a in out] == [[b"0"], [b"1", b"2"], [b"3", b"4"]]
    assert not m.queues


def test_a_batch_get_waits_for_all_its_items_and_those_behind_it_wait_too(m):
    handle(m, req(msgs.GetQueue, "b", 1, "q", count=2), req(msgs.GetQueue, "c", 1, "q"))
    assert handle(m, req(msgs.PutQueue, "a", 1, "q", item=item(b"0"))) != []  # only the ok
    out = handle(m, req(msgs.PutQueue, "a", 2, "q", item=item(b"1")))
    assert [(r[0], r[1]) for r in replies(out)] == [("a", 2), ("b", 1)]
    assert m.queues["q"].getters[0].request.client == "c"


def test_a_full_queue_makes_puts_wait_and_a_timed_out_put_lets_its_keys_go(m):
    handle(m, req(msgs.PutQueue, "a", 1, "q", item=item(b"0"), maxsize=1))
    out = handle(m, req(msgs.PutQueue, "a", 2, "q", now=1.0, item=item(b"1", "k"), maxsize=1,
                        timeout=5.0))
    assert [type(a) for a in out] == [WantKeys]  # held while it waits
    out = handle(m, tick(6.0))
    assert [type(a) for a in out] == [msgs.CoordinationReply, UnwantKeys]
    assert replies(out) == [("a", 2, "timeout", None)]
    handle(m, req(msgs.PutQueue, "a", 3, "q", item=item(b"2"), maxsize=1))
    out = handle(m, req(msgs.GetQueue, "b", 1, "q"))  # makes room: the waiting put goes in
    assert replies(out) == [("b", 1, "ok", None), ("a", 3, "ok", None)]
    assert [d for d, _ in m.queues["q"].items] == [b"2"]


def test_a_key_in_two_held_items_is_let_go_only_with_the_last(m):
    handle(m, req(msgs.PutQueue, "a", 1, "q", item=item(b"x", "k")),
           req(msgs.PutQueue, "a", 2, "q", item=item(b"y", "k")))
    out = handle(m, req(msgs.GetQueue, "b", 1, "q"))
    assert not [a for a in out if isinstance(a, UnwantKeys)]
    out = handle(m, req(msgs.GetQueue, "b", 2, "q"))
    assert [a.keys for a in out if isinstance(a, UnwantKeys)] == [("k",)]


# -- datasets ----------------------------------------------------------------------------


def test_datasets_are_published_once_listed_got_and_unpublished(m):
    handle(m, req(msgs.PublishDataset, "a", 1, "d", item=item(b"x", "k")))
    out = handle(m, req(msgs.PublishDataset, "a", 2, "d", item=item(b"y")))
    assert replies(out) == [("a", 2, "error", "KeyError")]
    assert replies(handle(m, req(msgs.Inspect, "a", 3, "", kind="dataset"))) == [
        ("a", 3, "ok", ["d"])]
    out = handle(m, req(msgs.GetDataset, "b", 1, "d"))
    assert out[0].items == (item(b"x", "k"),)
    assert out[1] == WantKeys(out[1].stimulus_id, "b", ("k",))
    assert replies(handle(m, req(msgs.GetDataset, "b", 2, "nope"))) == [
        ("b", 2, "error", "KeyError")]
    out = handle(m, req(msgs.UnpublishDataset, "a", 4, "d"))
    assert [type(a) for a in out] == [UnwantKeys, msgs.CoordinationReply]
    assert replies(handle(m, req(msgs.UnpublishDataset, "a", 5, "d")))[0][2] == "error"


def test_a_get_with_a_timeout_waits_for_the_dataset(m):
    assert handle(m, req(msgs.GetDataset, "b", 1, "d", timeout=5.0)) == []
    out = handle(m, req(msgs.PublishDataset, "a", 1, "d", item=item(b"x")))
    assert replies(out) == [("b", 1, "ok", None), ("a", 1, "ok", None)]


# -- the machine ---------------------------------------------------------------------------


def test_an_unknown_stimulus_is_refused_by_name(m):
    with pytest.raises(UnknownStimulus, match="no coordination handler for Event"):
        m.handle(msgs.Event(stimulus_id="x"))  # not one of its stimuli


def test_every_reply_carries_the_id_of_the_stimulus_that_caused_it(m):
    handle(m, acquire("a", 1))
    handle(m, acquire("b", 1))
    release = req(msgs.ReleaseLease, "a", 2, "db", kind="lock", lease="a-1")
    assert {a.stimulus_id for a in handle(m, release)} == {release.stimulus_id}
