"""dask's dataframe shuffles lowered to corral's (``shuffle_method="corral"``).

How dask chooses (dask 2024.12 to 2026.8): every dataframe shuffle (``shuffle``,
``set_index``, ``sort_values``, ``merge`` on columns, ``groupby(split_out>1)``) becomes
an abstract ``Shuffle`` expression whose ``_lower`` picks a concrete one by name:
``method or get_default_shuffle_method()``, which reads the config key
``dataframe.shuffle.method`` first. dask offers no registry of methods, so corral wraps
``Shuffle._lower`` once: for the name ``"corral"`` it returns ``CorralShuffle``, for any
other name dask's own. While a corral client is dask's default, ``enable`` makes
``"corral"`` the configured method (unless the user configured one), and dask's
tasks-based shuffle stays a ``shuffle_method="tasks"`` away.

If dask's internals moved (no ``Shuffle._lower``, another ``SimpleShuffle``), ``enable``
leaves dask's default alone and logs why once: shuffles then run dask's way, never
half corral's.

dask.bag's ``groupby`` reads the same setting but knows only ``"disk"`` and ``"tasks"``
(it raises for any other name, and turns dask's own ``"p2p"`` into ``"tasks"``): for
bags, ``"corral"`` means ``"tasks"`` too, which is right across hosts, unlike ``"disk"``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from corral import post_import
from corral.shuffle import METHOD

logger = logging.getLogger("corral.shuffle")

_TARGET = "dask.dataframe.dask_expr._shuffle"
_BAG = "dask.bag.core"
_lock = threading.Lock()
_patched: list[Any] = []  # the module patched, once
_broken: list[str] = []  # why it could not be


def enable() -> bool:
    """Lower ``"corral"`` shuffles to corral's (now, or once dask.dataframe is imported),
    and have bags group by tasks under it; whether that is possible with this dask."""
    if _broken:
        return False
    for target, patch in ((_BAG, _patch_bag), (_TARGET, _patch)):
        # (two threads may both add a wait: the patches are idempotent)
        if not post_import.waiting_for(target):
            post_import.when_imported(target, patch)
    return not _broken


def available() -> bool:
    """Whether ``"corral"`` is a shuffle method dask can lower here (imports dask.dataframe)."""
    import importlib

    return _patch(importlib.import_module(_TARGET))


def _patch(module: Any) -> bool:
    with _lock:
        if _patched:
            return True
        if _broken:
            return False
        shuffle: Any = getattr(module, "Shuffle", None)
        simple: Any = getattr(module, "SimpleShuffle", None)
        lower = getattr(shuffle, "_lower", None)
        params = list(getattr(simple, "_parameters", ()))
        expected = ["frame", "partitioning_index", "npartitions_out", "ignore_index",
                    "options", "original_partitioning_index", "_partitions"]
        if lower is None or params != expected:
            _broken.append(f"dask {_dask_version()} lowers shuffles in a way corral does "
                           "not know; dataframe shuffles use dask's own methods")
            logger.warning("%s", _broken[0])
            return False
        from corral.shuffle import expr

        corral_shuffle: Any = expr.CorralShuffle

        def _lower(self: Any) -> Any:
            from dask.utils import get_default_shuffle_method

            if type(self) is shuffle and (self.method or get_default_shuffle_method()) == METHOD:
                return corral_shuffle(self.frame, self.partitioning_index,
                                      self.npartitions_out, self.ignore_index, self.options,
                                      self.original_partitioning_index)
            return lower(self)

        shuffle._lower = _lower
        _patched.append(module)
        return True


def _patch_bag(module: Any) -> None:
    with _lock:
        original = getattr(module, "get_default_shuffle_method", None)
        if original is None or getattr(original, "corral", False):
            return

        def default_for_bags() -> Any:
            method = original()
            return "tasks" if method == METHOD else method

        default_for_bags.corral = True  # type: ignore[attr-defined]
        module.get_default_shuffle_method = default_for_bags


def _dask_version() -> str:
    from importlib.metadata import version

    return version("dask")
