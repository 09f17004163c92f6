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
import sys
import types
import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import cloudpickle

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


_NEVER_REPLACED = frozenset({int, float, str, bytes, bool, type(None)})


def replace_in(obj: Any, replace: Callable[[Any], Any | None], found: list[Any]) -> Any:
    """Rebuild containers in ``obj`` with ``replace(x)`` for each item it returns non-None.

    Replaced originals are appended to ``found``. Containers without replacements are
    returned as they are (no copy). Numbers, strings, bytes and None are never replaced
    (the arguments of a ``map`` are mostly these: no call for each).
    """
    kind = type(obj)
    if kind in _NEVER_REPLACED:
        return obj
    substitute = replace(obj)
    if substitute is not None:
        found.append(obj)
        return substitute
    if kind in (list, tuple, set, frozenset):
        items = [v if type(v) in _NEVER_REPLACED else replace_in(v, replace, found)
                 for v in obj]
        for a, b in zip(items, obj, strict=True):
            if a is not b:
                return kind(items)
        return obj
    if kind is dict:
        values = {k: v if type(v) in _NEVER_REPLACED else replace_in(v, replace, found)
                  for k, v in obj.items()}
        for k, v in obj.items():
            if values[k] is not v:
                return values
        return obj
    return obj


def pickle_function(fn: Callable[..., Any]) -> bytes:
    """``fn`` pickled (cloudpickle). A plain function pickled before comes back as the
    same bytes, unpickled again, when nothing its pickle holds can have changed since
    (``_pickle_inputs``): a loop of ``submit(f, ...)`` pays for pickling ``f`` once."""
    inputs = _pickle_inputs(fn)
    if inputs is None:
        return dumps_pickle(fn)
    modules = len(sys.modules)  # a module imported since may join the pickle
    cached = _pickled_functions.get(fn)
    if cached is not None and cached[0] == modules and len(cached[1]) == len(inputs) and all(
            a is b for a, b in zip(cached[1], inputs, strict=True)):
        return cached[2]
    data = dumps_pickle(fn)
    _pickled_functions[fn] = (modules, inputs, data)
    return data


# function -> (modules loaded, what its pickle was made of, the pickle); the tuple holds
# those objects, so an identity seen again is the same object, never a new one at a
# recycled address.
_pickled_functions: weakref.WeakKeyDictionary[Any, tuple[int, tuple[Any, ...], bytes]] = (
    weakref.WeakKeyDictionary())
_ABSENT = object()  # a global the function names but its module does not (yet) define
_IMMUTABLE = frozenset({type(None), bool, int, float, complex, str, bytes, type(Ellipsis),
                        types.BuiltinFunctionType})


def _pickle_inputs(fn: Any) -> tuple[Any, ...] | None:
    """Everything cloudpickle reads to pickle the function ``fn`` (by value, as for one
    defined in ``__main__``): as long as each is the same object, the pickle is the same
    — if none of them can change inside. None when that cannot be promised (a global, a
    default or a closed-over value that is mutable, attributes set on the function...):
    then the function is pickled afresh each time."""
    if type(fn) is not types.FunctionType or fn.__dict__ or (
            cloudpickle.list_registry_pickle_by_value()):
        return None
    code = fn.__code__
    inputs: list[Any] = [code, fn.__name__, fn.__qualname__, fn.__module__, fn.__doc__]
    fn_globals = fn.__globals__
    for name in _global_names(code):
        inputs.append(fn_globals.get(name, _ABSENT))
    for name in ("__package__", "__name__", "__path__", "__file__"):
        inputs.append(fn_globals.get(name, _ABSENT))
    for cell in fn.__closure__ or ():
        try:
            inputs.append(cell.cell_contents)
        except ValueError:  # an empty cell
            return None
    inputs.extend(fn.__defaults__ or ())
    for mapping in (fn.__kwdefaults__ or {}, fn.__annotations__):
        for name, value in mapping.items():  # flat: an items() pair is a new tuple each time
            inputs += (name, value)
    if not all(_unchanging(v) for v in inputs[5:]):
        return None
    return tuple(inputs)


def _unchanging(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` pickles the same as long as it is the same object."""
    kind = type(value)
    if kind in _IMMUTABLE or value is _ABSENT:
        return True
    if kind is tuple or kind is frozenset:
        return depth < 3 and all(_unchanging(v, depth + 1) for v in value)
    if kind is types.ModuleType:  # pickled as its name, if importable by it
        return sys.modules.get(value.__name__) is value
    if kind is types.FunctionType or isinstance(value, type):
        return _by_reference(value)  # else pickled by value: its own state may change
    return False


def _by_reference(obj: Any) -> bool:
    """Whether cloudpickle pickles the function or class ``obj`` as module + name."""
    module_name = getattr(obj, "__module__", None)
    if module_name in (None, "__main__") or "<locals>" in obj.__qualname__:
        return False
    found: Any = sys.modules.get(module_name)
    for part in obj.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is obj


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The names ``code`` (and the functions and classes defined in it) may read as
    globals: more than it does (attributes too), never fewer."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


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
