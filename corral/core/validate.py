"""Hold a peer's message to its declared shape at the server boundary.

A message's fields are declared once, as type hints: those of the dataclass it becomes
(a state machine's stimulus) or of the handler that serves it. ``build`` and ``checked``
check every field against them before anything acts on the message, so a malformed
message is refused whole and changes no state. Types are checked, not coerced, except
that a list stands for a tuple (msgpack's arrays) and ``Annotated[int, AtLeast(n)]``
also bounds the value. Understood hints: ``Any``, ``Hashable`` (a key), ``str``,
``bytes`` (any bytes-like), ``bool``, ``int``, ``float`` (finite; an int will do),
``None``, unions, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``, ``dict[K, V]`` and
dataclasses (given as dicts). A hand-written checker because keys are any hashable
value and fields may carry pickled objects, which schema libraries cannot express.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Hashable
from typing import Annotated, Any, TypeVar, Union

from corral.basic_types import AtLeast
from corral.core.fastcheck import MISS, compile_dataclass, compile_fast
from corral.exceptions import InvalidMessage

T = TypeVar("T")
Check = Callable[[Any, str], Any]  # (value, where) -> value as declared, or InvalidMessage


def build(cls: type[T], fields: dict[str, Any]) -> T:
    """``cls(**fields)`` once every field matches ``cls``'s hints, else ``InvalidMessage``."""
    return _dataclass_check(cls)(fields, cls.__name__)


def checked(handler: Callable[..., T]) -> Callable[..., T]:
    """A server handler whose keyword arguments (the message's fields: not ``comm``) are
    checked against its own hints first."""
    hints = typing.get_type_hints(handler, include_extras=True)
    checks = {name: _compile_checked(hint) for name, hint in hints.items()
              if name not in ("return", "comm")}

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for name, value in kwargs.items():
            check = checks.get(name)
            if check is not None:
                kwargs[name] = check(value, name)
        return handler(*args, **kwargs)

    return wrapper


def _refuse(value: Any, where: str, expected: str) -> typing.NoReturn:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise InvalidMessage(f"{where}: expected {expected}, got {type(value).__name__} {shown}")


def _exact(kind: type, name: str) -> Check:
    def check(value: Any, where: str) -> Any:
        if not isinstance(value, kind):
            _refuse(value, where, name)
        return value
    return check


def _int(value: Any, where: str) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        _refuse(value, where, "an integer")
    return value


def _float(value: Any, where: str) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        _refuse(value, where, "a finite number")
    return value


def _bytes(value: Any, where: str) -> Any:
    if not isinstance(value, bytes | bytearray | memoryview):
        _refuse(value, where, "bytes")
    return value


def _key(value: Any, where: str) -> Any:
    try:
        hash(value)
    except TypeError:
        _refuse(value, where, "a key (hashable)")
    return value


def _anything(value: Any, where: str) -> Any:
    return value


_SIMPLE: dict[Any, Check] = {
    Any: _anything, object: _anything, Hashable: _key, int: _int, float: _float,
    bytes: _bytes, str: _exact(str, "a string"), bool: _exact(bool, "a boolean"),
    type(None): _exact(type(None), "None"), None: _exact(type(None), "None"),
}


@functools.cache
def _compile(hint: Any) -> Check:
    if hint in _SIMPLE:
        return _SIMPLE[hint]
    if dataclasses.is_dataclass(hint):
        return _full_dataclass_check(hint)  # type: ignore[arg-type]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _bounded(_compile(args[0]), [a for a in args[1:] if isinstance(a, AtLeast)])
    if origin in (Union, types.UnionType):
        expected = " or ".join(map(_name, args))
        if type(None) not in args:
            return _union([_compile(a) for a in args], expected)
        # None first, without trying the others (each refusal raises): optional fields
        # are None in most messages
        rest = _union([_compile(a) for a in args if a is not type(None)], expected)
        return lambda value, where: None if value is None else rest(value, where)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _sequence(_compile(args[0]), tuple)
    if origin is tuple:
        return _fixed_tuple([_compile(a) for a in args])
    if origin is list:
        return _sequence(_compile(args[0]) if args else _anything, list)
    if origin is dict:
        return _mapping(*((_compile(a) for a in args) if args else (_key, _anything)))
    raise TypeError(f"no check for the hint {hint!r}")  # a field declared with a new kind


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _bounded(check: Check, bounds: list[AtLeast]) -> Check:
    def bounded(value: Any, where: str) -> Any:
        value = check(value, where)
        for bound in bounds:
            if value < bound.low:
                _refuse(value, where, f"a number >= {bound.low:g}")
        return value
    return bounded


def _union(checks: list[Check], expected: str) -> Check:
    def union(value: Any, where: str) -> Any:
        for check in checks:
            try:
                return check(value, where)
            except InvalidMessage:
                continue
        _refuse(value, where, expected)
    return union


def _sequence(item: Check, kind: type) -> Check:
    def sequence(value: Any, where: str) -> Any:
        if not isinstance(value, list | tuple):
            _refuse(value, where, "a sequence")
        return kind(item(v, f"{where}[{i}]") for i, v in enumerate(value))
    return sequence


def _fixed_tuple(items: list[Check]) -> Check:
    def fixed(value: Any, where: str) -> Any:
        if not isinstance(value, list | tuple) or len(value) != len(items):
            _refuse(value, where, f"a sequence of {len(items)}")
        pairs = enumerate(zip(items, value, strict=True))
        return tuple(check(v, f"{where}[{i}]") for i, (check, v) in pairs)
    return fixed


def _mapping(key: Check, item: Check) -> Check:
    def mapping(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            _refuse(value, where, "a mapping")
        return {key(k, f"{where} key"): item(v, f"{where}[{k!r}]") for k, v in value.items()}
    return mapping


_DATACLASS_CHECKS: dict[type[Any], Check] = {}  # the fast path, then the full check
_FULL_DATACLASS_CHECKS: dict[type[Any], Check] = {}


def _dataclass_check(cls: type[T]) -> Callable[[Any, str], T]:
    """The check for dataclass ``cls``, compiled on first use (a plain dict rather than
    ``functools.cache``, whose wrapper loses this function's generic signature)."""
    check = _DATACLASS_CHECKS.get(cls)
    if check is None:
        check = _DATACLASS_CHECKS[cls] = _with_fast_path(
            compile_dataclass(cls, _compile), _full_dataclass_check(cls))
    return check


def _full_dataclass_check(cls: type[T]) -> Callable[[Any, str], T]:
    check = _FULL_DATACLASS_CHECKS.get(cls)
    if check is None:
        check = _FULL_DATACLASS_CHECKS[cls] = _compile_dataclass(cls)
    return check


def _compile_checked(hint: Any) -> Check:
    """A handler argument's check: containers and dataclasses try their fast path first."""
    check = _compile(hint)
    if check in _SIMPLE.values():
        return check
    return _with_fast_path(compile_fast(hint, _compile), check)


def _with_fast_path(fast: Callable[[Any], Any], full: Check) -> Check:
    """``fast(value)`` unless it is not sure (``MISS``): then ``full(value, where)``, which
    accepts or refuses with the reason (``corral.core.fastcheck``)."""
    def check(value: Any, where: str) -> Any:
        result = fast(value)
        return full(value, where) if result is MISS else result
    return check


def _compile_dataclass(cls: type[T]) -> Callable[[Any, str], T]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: _compile(hints[f.name]) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    required = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}

    def check(value: Any, where: str) -> T:
        if not isinstance(value, dict):
            _refuse(value, where, "a mapping")
        unknown = [k for k in value if k not in fields]
        if unknown:
            raise InvalidMessage(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
        missing = [k for k in required if k not in value]
        if missing:
            raise InvalidMessage(f"{where}: missing field(s) {', '.join(sorted(missing))}")
        return cls(**{k: fields[k](v, f"{where}.{k}") for k, v in value.items()})
    return check
