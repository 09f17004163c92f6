"""Packing a function call into an opaque ``run_spec``, and running it on a worker.

The client replaces every future among the arguments (also inside lists, tuples,
sets and dicts) with a ``Dependency`` placeholder and pickles ``(function, args,
kwargs)``; the scheduler only ever forwards those bytes; the worker unpickles them,
puts the dependencies' values in place of the placeholders, and calls the function.
The function is pickled on its own so that ``map`` pickles it once for many tasks, and
a worker unpickles it once for many tasks (a small cache keyed by its bytes). A graph
carries each function's bytes once, and its tasks only their arguments (``pack_args``):
the scheduler keeps one copy of a function for all the tasks of a ``map``, and passes
it to the worker beside the arguments (``unpack(run_spec, function)``).
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from corral.protocol import dumps_pickle, loads_pickle


class Dependency:
    """Stands in for the value of ``key`` inside a task's arguments."""

    __slots__ = ("key",)

    def __init__(self, key: Hashable) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (Dependency, (self.key,))

    def __repr__(self) -> str:
        return f"Dependency({self.key!r})"


def replace_in(obj: Any, replace: Callable[[Any], Any | None], found: list[Any]) -> Any:
    """Rebuild containers in ``obj`` with ``replace(x)`` for each item it returns non-None.

    Replaced originals are appended to ``found``. Containers without replacements are
    returned as they are (no copy).
    """
    substitute = replace(obj)
    if substitute is not None:
        found.append(obj)
        return substitute
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        items = [replace_in(v, replace, found) for v in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        return kind(items)
    if kind is dict:
        values = {k: replace_in(v, replace, found) for k, v in obj.items()}
        if all(values[k] is v for k, v in obj.items()):
            return obj
        return values
    return obj


def pickle_function(fn: Callable[..., Any]) -> bytes:
    return dumps_pickle(fn)


def pack(function_bytes: bytes, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
    """The run_spec of ``function(*args, **kwargs)``; futures already replaced."""
    return dumps_pickle((function_bytes, args, dict(kwargs)))


def pack_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
    """The run_spec of a call whose function travels apart (``unpack``'s ``function``)."""
    return dumps_pickle((args, dict(kwargs)))


def token(function_bytes: bytes, args: Any, kwargs: Any) -> str:
    """A deterministic hash of a call, so equal pure calls share a key."""
    h = hashlib.blake2b(function_bytes, digest_size=16)
    try:
        h.update(pickle.dumps((args, sorted(kwargs.items())), protocol=5))
    except Exception:
        h.update(dumps_pickle((args, kwargs)))
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _load_function(function_bytes: bytes) -> Callable[..., Any]:
    return loads_pickle(function_bytes)


def unpack(
    run_spec: bytes, function: bytes | None = None
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The call in ``run_spec`` (from ``pack``, or from ``pack_args`` with its function's
    bytes given apart)."""
    if function is not None:
        args, kwargs = loads_pickle(run_spec)
        return _load_function(function), args, kwargs
    function_bytes, args, kwargs = loads_pickle(run_spec)
    return _load_function(function_bytes), args, kwargs


def substitute(obj: Any, data: Mapping[Hashable, Any]) -> Any:
    """Put the values of dependencies in place of their ``Dependency`` placeholders."""
    kind = type(obj)
    if kind is Dependency:
        return data[obj.key]
    if kind in (list, tuple, set, frozenset):
        return kind(substitute(v, data) for v in obj)
    if kind is dict:
        return {k: substitute(v, data) for k, v in obj.items()}
    return obj
