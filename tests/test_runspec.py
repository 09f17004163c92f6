"""``runspec.pickle_function``: a function pickled again is not pickled again, unless
what its pickle holds may have changed (issue 18: latency of ``submit`` in a loop)."""

from __future__ import annotations

from typing import Any

from corral import runspec
from corral.protocol import loads_pickle


def by_value(source: str, **env: Any) -> dict[str, Any]:
    """The namespace of ``source`` run as if in ``__main__``: its functions pickle by
    value (cloudpickle), with the globals they read, as a script's or notebook's do."""
    namespace: dict[str, Any] = {"__name__": "__main__", **env}
    exec(source, namespace)
    return namespace


def test_same_function_same_bytes_pickled_once() -> None:
    ns = by_value("def inc(x):\n    return x + 1\n")
    first = runspec.pickle_function(ns["inc"])
    assert runspec.pickle_function(ns["inc"]) is first
    assert loads_pickle(first)(1) == 2


def test_annotated_and_keyword_defaulted_functions_are_pickled_once() -> None:
    ns = by_value("def inc(x: int, *, by: int = 1) -> int:\n    return x + by\n")
    first = runspec.pickle_function(ns["inc"])
    assert runspec.pickle_function(ns["inc"]) is first
    assert loads_pickle(first)(1) == 2


def test_a_rebound_global_is_pickled_afresh() -> None:
    ns = by_value("K = 2\ndef add(x):\n    return x + K\n")
    runspec.pickle_function(ns["add"])
    ns["K"] = 3
    assert loads_pickle(runspec.pickle_function(ns["add"]))(1) == 4


def test_a_global_defined_later_is_pickled_afresh() -> None:
    ns = by_value("def add(x):\n    return x + LATER\n")
    runspec.pickle_function(ns["add"])
    ns["LATER"] = 10
    assert loads_pickle(runspec.pickle_function(ns["add"]))(1) == 11


def test_mutable_state_is_never_cached() -> None:
    """A list it reads may change inside and keep its identity: pickled each time."""
    ns = by_value("DATA = [1]\ndef first(x):\n    return DATA[0] + x\n")
    assert runspec._pickle_inputs(ns["first"]) is None
    runspec.pickle_function(ns["first"])
    ns["DATA"][0] = 5
    assert loads_pickle(runspec.pickle_function(ns["first"]))(0) == 5


def test_what_may_change_inside_is_not_cached() -> None:
    ns = by_value(
        "def closes_over(v):\n    return lambda x: x + v\n"
        "def helper(x):\n    return x\n"
        "def calls_helper(x):\n    return helper(x)\n"
        "def default_list(x, acc=[]):\n    return acc\n"
    )
    assert runspec._pickle_inputs(ns["closes_over"](1)) is not None  # an int: fine
    assert runspec._pickle_inputs(ns["closes_over"]([1])) is None
    assert runspec._pickle_inputs(ns["calls_helper"]) is None  # helper pickles by value
    assert runspec._pickle_inputs(ns["default_list"]) is None
    with_attribute = ns["helper"]
    with_attribute.note = "set on the function"
    assert runspec._pickle_inputs(with_attribute) is None
    assert runspec._pickle_inputs(len) is None  # not a plain function: pickled as ever


def test_modules_and_importable_functions_are_references() -> None:
    import os.path

    ns = by_value("def in_x(a):\n    return os.path.join(a, 'x')\n", os=os)
    assert runspec._pickle_inputs(ns["in_x"]) is not None
    assert runspec._unchanging(os.path.join)  # pickled as module + name


def test_impure_keys_are_unique_without_a_system_call_each() -> None:
    from corral.client.tasks import unique_suffix

    suffixes = [unique_suffix() for _ in range(1000)]
    assert len(set(suffixes)) == 1000
    assert all(len(s) == 32 and int(s, 16) >= 0 for s in suffixes)  # as uuid4().hex
