"""Fast paths for ``corral.core.validate``'s checks, generated once per declared type.

Rules
-----
* A fast path takes a value and returns what the full check would return for it, or
  ``MISS`` when it is not sure. It never refuses, never raises and builds no message
  text: on ``MISS`` the full check runs, and accepts, or refuses with its one clear line.
* So a fast path may be narrower than the full check but never wider: it accepts the
  exact built-in types a message decodes to (``type(v) is str``, not subclasses; bytes,
  not ``bytearray``), leaving every other value to the full check.
* A dataclass (a message, or a part of one such as ``TaskSpec``) gets one generated
  function that tests each field inline, in the order declared, and builds the object;
  containers get a generated loop; kinds it has no inline form for (unions other than
  ``X | None``) call the full check and turn its refusal into ``MISS``.

Why generated: the full check walks a tree of closures and formats the path of every
value it visits (``tasks[0].key``) in case it has to refuse it; for the few messages
a task sends, that was a tenth of the scheduler's time per task.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from collections.abc import Callable, Hashable
from typing import Annotated, Any, Union

from corral.basic_types import AtLeast
from corral.exceptions import InvalidMessage

MISS: Any = object()  # "not sure": run the full check
Fast = Callable[[Any], Any]  # value -> value as declared, or MISS
Slow = Callable[[Any, str], Any]  # validate's check: (value, where) -> value, or raises

_ABSENT = object()


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class _Source:
    """Names that generated code refers to, and fresh names for its temporaries."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {"MISS": MISS, "_ABSENT": _ABSENT, "_INF": math.inf,
                                    "_hashable": _hashable}
        self._count = itertools.count()

    def name(self, obj: Any, prefix: str = "_f") -> str:
        name = f"{prefix}{next(self._count)}"
        self.env[name] = obj
        return name

    def temp(self) -> str:
        return f"_t{next(self._count)}"

    def function(self, name: str, lines: list[str]) -> Any:
        code = "\n".join(lines)
        exec(compile(code, f"<fastcheck {name}>", "exec"), self.env)
        return self.env[name]


_LEAVES: dict[Any, str] = {  # inline tests, with ``{v}`` for the value
    int: "type({v}) is int",
    float: "(type({v}) is float and -_INF < {v} < _INF or type({v}) is int)",
    bytes: "type({v}) is bytes",
    str: "type({v}) is str",
    bool: "type({v}) is bool",
    type(None): "{v} is None",
    None: "{v} is None",
    Hashable: "(type({v}) is str or _hashable({v}))",
}


def _inline(hint: Any, v: str, src: _Source, slow: Callable[[Any], Slow]) -> tuple[str, str]:
    """``(test, result)``: Python expressions on the variable ``v``; ``result`` is valid
    once ``test`` has been evaluated to true (it may read temporaries ``test`` set)."""
    if hint is Any or hint is object:
        return "True", v
    leaf = _LEAVES.get(hint)
    if leaf is not None:
        return leaf.format(v=v), v
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        test, result = _inline(args[0], v, src, slow)
        for bound in args[1:]:
            if isinstance(bound, AtLeast):
                test = f"({test} and {v} >= {bound.low!r})"
        return test, result
    if origin in (Union, types.UnionType) and type(None) in args and len(args) == 2:
        (other,) = (a for a in args if a is not type(None))
        test, result = _inline(other, v, src, slow)
        if result != v:
            result = f"(None if {v} is None else {result})"
        return f"({v} is None or {test})", result
    fn = src.name(compile_fast(hint, slow))
    temp = src.temp()
    return f"({temp} := {fn}({v})) is not MISS", temp


def compile_fast(hint: Any, slow: Callable[[Any], Slow]) -> Fast:
    """The fast path for ``hint``; ``slow(hint)`` gives the full check, for the kinds
    this has no inline form for."""
    if dataclasses.is_dataclass(hint):
        return compile_dataclass(hint, slow)  # type: ignore[arg-type]
    src = _Source()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _sequence(args[0], "tuple", src, slow)
    if origin is list:
        return _sequence(args[0] if args else Any, "list", src, slow)
    if origin is tuple:
        return _fixed_tuple(args, src, slow)
    if origin is dict:
        return _mapping(*(args or (Hashable, Any)), src=src, slow=slow)
    if origin is None and hint not in _LEAVES and hint is not Any and hint is not object:
        return _via_slow(slow(hint))
    if origin in (Union, types.UnionType) and not (type(None) in args and len(args) == 2):
        return _via_slow(slow(hint))
    test, result = _inline(hint, "v", src, slow)
    return src.function("fast", [
        "def fast(v):",
        f"    return {result} if {test} else MISS",
    ])


def _via_slow(check: Slow) -> Fast:
    def fast(value: Any) -> Any:
        try:
            return check(value, "")
        except InvalidMessage:
            return MISS
    return fast


def _sequence(item: Any, kind: str, src: _Source, slow: Callable[[Any], Slow]) -> Fast:
    test, result = _inline(item, "x", src, slow)
    if result == "x":
        return src.function("fast", [
            "def fast(v):",
            "    if type(v) is not list and type(v) is not tuple:",
            "        return MISS",
            "    for x in v:",
            f"        if not ({test}):",
            "            return MISS",
            f"    return {kind}(v)",
        ])
    return src.function("fast", [
        "def fast(v):",
        "    if type(v) is not list and type(v) is not tuple:",
        "        return MISS",
        "    out = []",
        "    for x in v:",
        f"        if not ({test}):",
        "            return MISS",
        f"        out.append({result})",
        f"    return {kind}(out)" if kind != "list" else "    return out",
    ])


def _fixed_tuple(items: tuple[Any, ...], src: _Source, slow: Callable[[Any], Slow]) -> Fast:
    names = [f"x{i}" for i in range(len(items))]
    parts = [_inline(item, name, src, slow) for item, name in zip(items, names, strict=True)]
    tests = " and ".join(test for test, _ in parts) or "True"
    results = "".join(f"{result}, " for _, result in parts)
    return src.function("fast", [
        "def fast(v):",
        f"    if (type(v) is not list and type(v) is not tuple) or len(v) != {len(items)}:",
        "        return MISS",
        f"    ({''.join(f'{n}, ' for n in names)}) = v",
        f"    return ({results}) if {tests} else MISS",
    ])


def _mapping(key: Any, item: Any, *, src: _Source, slow: Callable[[Any], Slow]) -> Fast:
    key_test, key_result = _inline(key, "k", src, slow)
    test, result = _inline(item, "x", src, slow)
    if key_result == "k" and result == "x":
        return src.function("fast", [
            "def fast(v):",
            "    if type(v) is not dict:",
            "        return MISS",
            "    for k, x in v.items():",
            f"        if not ({key_test} and {test}):",
            "            return MISS",
            "    return dict(v)",
        ])
    return src.function("fast", [
        "def fast(v):",
        "    if type(v) is not dict:",
        "        return MISS",
        "    out = {}",
        "    for k, x in v.items():",
        f"        if not ({key_test} and {test}):",
        "            return MISS",
        f"        out[{key_result}] = {result}",
        "    return out",
    ])


_DATACLASSES: dict[type[Any], Fast] = {}


def compile_dataclass(cls: type[Any], slow: Callable[[Any], Slow]) -> Fast:
    """The fast path for a dataclass given as a dict of its fields: ``cls(**fields)``."""
    fast = _DATACLASSES.get(cls)
    if fast is None:
        fast = _DATACLASSES[cls] = _compile_dataclass(cls, slow)
    return fast


def _compile_dataclass(cls: type[Any], slow: Callable[[Any], Slow]) -> Fast:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = dataclasses.fields(cls)
    required = frozenset(f.name for f in fields if f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
    setters = _slot_setters(cls, fields)
    src = _Source()
    lines = [
        "def fast(value):",
        "    if type(value) is not dict:",
        "        return MISS",
        "    keys = value.keys()",
        f"    if not (keys <= {src.name(frozenset(f.name for f in fields), '_names')} and "
        f"{src.name(required, '_required')} <= keys):",
        "        return MISS",
    ]
    if setters is None:  # build it with its __init__
        lines.append("    out = {}")
    else:  # set its slots as the generated __init__ of a frozen dataclass would
        lines.append(f"    out = {src.name(object.__new__, '_new')}({src.name(cls, '_cls')})")
    for f in fields:
        test, result = _inline(hints[f.name], "v", src, slow)
        if setters is None:
            store = [f"out[{f.name!r}] = {result}"]
            default: list[str] = []
        else:
            setter = src.name(setters[f.name], "_set")
            store = [f"{setter}(out, {result})"]
            default = [f"{setter}(out, {_default(f, src)})"]
        if f.name in required:
            lines += [f"    v = value[{f.name!r}]", f"    if not ({test}):", "        return MISS"]
            lines += [f"    {line}" for line in store]
            continue
        lines += [f"    v = value.get({f.name!r}, _ABSENT)", "    if v is not _ABSENT:",
                  f"        if not ({test}):", "            return MISS"]
        lines += [f"        {line}" for line in store]
        if default:
            lines += ["    else:", *(f"        {line}" for line in default)]
    lines.append("    return out" if setters is not None
                 else f"    return {src.name(cls, '_cls')}(**out)")
    return src.function("fast", lines)


def _slot_setters(cls: type[Any], fields: tuple[dataclasses.Field[Any], ...]
                  ) -> dict[str, Callable[[Any, Any], None]] | None:
    """The slots' own setters (which a frozen class's ``__setattr__`` does not stop), if
    ``cls.__init__`` only stores its fields: a slotted dataclass, all fields in
    ``__init__``, no ``__post_init__``. Else None."""
    if hasattr(cls, "__post_init__") or not all(f.init for f in fields):
        return None
    setters = {}
    for f in fields:
        slot = next((k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__), None)
        if type(slot) is not types.MemberDescriptorType:
            return None
        setters[f.name] = slot.__set__
    return setters


def _default(f: dataclasses.Field[Any], src: _Source) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return f"{src.name(f.default_factory, '_factory')}()"
    return src.name(f.default, "_default")
