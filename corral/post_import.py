"""Run code right after a module is first imported, without importing it ourselves.

corral adapts dask when dask is there, but importing dask costs ~70 ms (a tenth of a
cold start) and most of a program's life may not need it: ``when_imported`` defers the
adaptation to the moment the program imports the module, if it ever does.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

_lock = threading.Lock()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: lets the real finders find ``name``, and wraps its loader
    so that ``then`` runs once the module's code has."""

    def __init__(self, name: str, then: Callable[[ModuleType], object]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name or not _remove(self):
            return None
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            self.then(module)

        loader.exec_module = exec_module
        return spec


def _remove(finder: _AfterImport) -> bool:
    with _lock:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
            return True
        return False


def when_imported(name: str, then: Callable[[ModuleType], object]) -> Callable[[], bool]:
    """Call ``then(module)`` once module ``name`` is imported: now if it is already,
    else right after its first import. Returns a function that cancels a call still to
    come (True if it did)."""
    module = sys.modules.get(name)
    if module is not None:
        then(module)
        return lambda: False
    finder = _AfterImport(name, then)
    with _lock:
        sys.meta_path.insert(0, finder)
    return lambda: _remove(finder)


def waiting_for(name: str) -> bool:
    """Whether a call is due when ``name`` is imported."""
    with _lock:
        return any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path)
