"""corral's configuration: one tree of settings for every knob.

Built on donfig (the library dask's own configuration was extracted into). Layers, the
later winning: the defaults shipped in ``corral/corral.yaml``; YAML files under
``/etc/corral``, ``~/.config/corral`` and the file ``$CORRAL_CONFIG`` names;
``CORRAL_...`` environment variables (``CORRAL_SCHEDULER__WORKER_TTL=60`` sets
``scheduler.worker-ttl``); then ``corral.config.set(...)`` in code::

    import corral
    corral.config.get("scheduler.worker-ttl")          # 30.0
    with corral.config.set({"scheduler.worker-ttl": 60}):
        ...

A knob is read where it is used, when the object that uses it is built (``None`` as an
argument means "the configured value"). Adding one is a line in ``corral.yaml`` (with its
comment, which is its documentation) and ``config.get("section.name")`` where it is read
(``config.fallback(argument, "section.name")`` for an argument that defaults to None).

Environment variables only count when their first level is a section of the defaults:
corral's other variables (``CORRAL_TOKEN``, ``CORRAL_NANNY``, ...) carry credentials and
process plumbing, and stay out of the tree. Worker processes a ``LocalCluster`` starts
inherit this process's settings, ``config.set`` included (``inherited_environment``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from donfig import Config
from donfig.config_obj import collect_yaml, serialize

PREFIX = "CORRAL_"
INHERIT_ENV = f"{PREFIX}_INTERNAL_INHERIT_CONFIG"  # donfig's name for a serialized config
DEFAULTS_FILE = Path(__file__).with_name("corral.yaml")
DEFAULTS: dict[str, Any] = collect_yaml(paths=[str(DEFAULTS_FILE)])[0]


_BOOLEANS = {"true": "True", "false": "False", "yes": "True", "no": "False"}


class _Environment(Mapping[str, str]):
    """``os.environ`` as donfig should see it: only the variables that name a setting."""

    def _wanted(self, name: str) -> bool:
        if not name.startswith(PREFIX):
            return False
        if name == INHERIT_ENV:
            return True
        section = name[len(PREFIX):].split("__", 1)[0].lower().replace("_", "-")
        return section in DEFAULTS

    def __getitem__(self, name: str) -> str:
        if not self._wanted(name):
            raise KeyError(name)
        value = os.environ[name]
        # donfig reads values as Python literals: "false" would stay a (true) string
        return _BOOLEANS.get(value.strip().lower(), value)

    def __iter__(self) -> Iterator[str]:
        return (name for name in list(os.environ) if self._wanted(name))

    def __len__(self) -> int:
        return sum(1 for _ in self)


config = Config("corral", defaults=[DEFAULTS], env=_Environment())
get = config.get
set = config.set
refresh = config.refresh


def fallback(given: Any, key: str) -> Any:
    """``given``, unless it is None: then the configured value of ``key``."""
    return get(key) if given is None else given


def inherited_environment() -> dict[str, str]:
    """Environment variables that give a child process this process's settings."""
    return {INHERIT_ENV: serialize(config.config)}


__all__ = ["DEFAULTS", "config", "fallback", "get", "inherited_environment", "refresh", "set"]
