"""Package ``__init__``s that name their exports without importing them (PEP 562).

Importing ``corral.worker.state`` first imports ``corral`` and ``corral.worker``; were
those to import their servers eagerly, a pure state machine would load asyncio, the
transports and the scheduler with it. Each export is imported on first access instead.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose ``exports`` map each public
    name to the module that defines it, or to itself when the name is a submodule
    (``"config": "corral.config"``: ``corral.config`` is the module)."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module == f"{package}.{name}" else getattr(imported, name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
