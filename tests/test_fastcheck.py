"""The generated fast paths of message validation (``corral.core.fastcheck``) never
disagree with the full checks: for any value, a fast path either says it is not sure
(``MISS``) or returns exactly what the full check returns, of the same types. So it can
never accept what the full check refuses, and refusals keep their one-line reasons."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import messages as msgs
from corral.basic_types import Count, Key
from corral.core import validate
from corral.core.fastcheck import MISS, compile_dataclass, compile_fast
from corral.exceptions import InvalidMessage
from corral.protocol import MessageCodec
from tests.test_messages import MESSAGES, example

ALL = [*MESSAGES, msgs.TaskSpec]


class Text(str):
    """A subclass: the full check takes it, the fast path leaves it to the full check."""


# Values a peer might send: what msgpack decodes to, and a few things it does not.
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
    st.text(max_size=5), st.binary(max_size=5), st.just(bytearray(b"ab")),
    st.just(memoryview(b"ab")), st.just(Text("t")), st.just(math.nan),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
                            st.dictionaries(st.one_of(st.text(max_size=3), st.integers()),
                                            inner, max_size=3)),
    max_leaves=8,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 and (1,) != [1] aside)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name))
                   for f in dataclasses.fields(a))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def agree(fast: Any, full: Any, value: Any) -> None:
    got = fast(value)
    try:
        want = full(value, "x")
    except InvalidMessage:
        assert got is MISS, f"fast path took what the full check refuses: {value!r}"
        return
    assert got is MISS or same(got, want), (value, got, want)


def fields_of(message: Any) -> dict[str, Any]:
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}


CODEC = MessageCodec()


def wire_form(message: Any) -> dict[str, Any]:
    """Its fields as the receiver reads them: through ``to_wire`` and the codec, with the
    fields the receiver sets itself."""
    fields = CODEC.decode(CODEC.encode(message.to_wire()))
    fields.pop("op", None)
    for name in getattr(message, "local_fields", ()):
        fields[name] = getattr(message, name)
    return fields


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_a_well_formed_message_takes_the_fast_path(cls):
    fast = compile_dataclass(cls, validate._compile)
    message = example(cls) if cls is not msgs.TaskSpec else msgs.TaskSpec(key="k", run_spec=b"")
    for fields in (wire_form(message),):
        got = fast(fields)
        assert got is not MISS
        assert same(got, validate._full_dataclass_check(cls)(fields, "x"))
        assert got == message


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fast_path_and_full_check_agree_on_any_field_value(cls, data):
    message = example(cls) if cls is not msgs.TaskSpec else msgs.TaskSpec(key="k", run_spec=b"")
    fields = wire_form(message)
    names = [f.name for f in dataclasses.fields(cls)]
    name = data.draw(st.sampled_from([*names, "unknown"]))
    if data.draw(st.booleans()) and name in fields:
        del fields[name]  # missing: fine for a field with a default
    else:
        fields[name] = data.draw(values)
    agree(compile_dataclass(cls, validate._compile), validate._full_dataclass_check(cls),
          fields)


HINTS = [int, float, str, bytes, bool, Key, Count, Any, str | None, tuple[str, ...],
         tuple[Key, ...] | None, list[int], dict[Key, tuple[str, ...]], dict[str, float],
         tuple[str, float, float, Count], tuple[tuple[str, Count], ...], int | str,
         dict[Hashable, Any], list[Any] | None]


@pytest.mark.parametrize("hint", HINTS, ids=str)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=values)
def test_fast_path_and_full_check_agree_for_each_kind(hint, value):
    agree(compile_fast(hint, validate._compile), validate._compile(hint), value)


def test_the_messages_a_task_sends_are_read_without_the_full_check(monkeypatch):
    """The per-task messages never fall back: that is what the fast path is for."""
    def refuse(*args: Any) -> typing.NoReturn:
        raise AssertionError("fell back to the full check")

    def compile_refusal(cls: type) -> Any:
        return refuse

    key = "inc-0123"
    graph = msgs.UpdateGraph(stimulus_id="c-1", client="c", wanted=(key,), tasks=(
        msgs.TaskSpec(key=key, run_spec=b"x", name="inc"),))
    wires = [
        (msgs.FROM_CLIENT, graph),
        (msgs.FROM_CLIENT, msgs.ClientReleasesKeys(stimulus_id="c-2", client="c", keys=(key,))),
        (msgs.TO_WORKER, msgs.ComputeTask(
            stimulus_id="s-1", key=key, run_spec=b"x", who_has={"a": ("tcp://w:1",)},
            nbytes={"a": 8}, priority=(0, 1.0), inline_result=10, worker="w")),
        (msgs.FROM_WORKER, msgs.TaskStarted(stimulus_id="w-1", key=key, worker="w")),
        (msgs.FROM_WORKER, msgs.TaskFinished(stimulus_id="w-2", key=key, nbytes=28, start=1.0,
                                             typename="int", stop=2.0, pickled=b"p", worker="w")),
        (msgs.TO_CLIENT, msgs.ReportKeyInMemory(
            stimulus_id="w-2", client="c", key=key, who_has=("tcp://w:1",), nbytes=28,
            pickled=b"p")),
    ]

    def read_all() -> list[msgs.Message]:
        return [msgs.read(table, CODEC.decode(CODEC.encode(m.to_wire())), lambda: "id",
                          **{name: getattr(m, name) for name in m.local_fields})
                for table, m in wires]

    assert read_all() == [m for _, m in wires]
    monkeypatch.setattr(validate, "_DATACLASS_CHECKS", {})
    monkeypatch.setattr(validate, "_FULL_DATACLASS_CHECKS", {})
    monkeypatch.setattr(validate, "_compile_dataclass", compile_refusal)
    assert read_all() == [m for _, m in wires]


def test_a_refusal_still_names_the_field():
    with pytest.raises(InvalidMessage, match=r"TaskFinished.nbytes: expected a number >= 0"):
        msgs.read(msgs.FROM_WORKER, {"op": "task-finished", "key": "x", "nbytes": -5},
                  lambda: "id", worker="w")
    with pytest.raises(InvalidMessage, match=r"UpdateGraph.tasks\[0\].key"):
        msgs.read(msgs.FROM_CLIENT, {"op": "update-graph", "wanted": [], "tasks": [
            {"key": ["unhashable"], "run_spec": b""}]}, lambda: "id", client="c")
