"""The versions a process runs with, for ``client.get_versions``: a program whose client
and workers unpickle with different libraries fails in ways that are hard to read."""

from __future__ import annotations

import functools
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import Any

# Must agree everywhere: they decide how tasks and data are read.
REQUIRED = ("python", "corral", "cloudpickle", "msgpack")
# Reported when installed; a difference among client and workers is refused by check=True.
COMMON = ("numpy", "pandas", "dask", "lz4", "psutil", "uvloop")


def package_version(name: str) -> str | None:
    if name == "python":
        return platform.python_version()
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _base() -> dict[str, Any]:
    return {
        "host": {"python": sys.version.split()[0], "os": platform.system(),
                 "release": platform.release(), "machine": platform.machine()},
        "packages": {name: package_version(name) for name in (*REQUIRED, *COMMON)},
    }


def versions(packages: Iterable[str] = ()) -> dict[str, Any]:
    """``{"host": {...}, "packages": {name: version or None}}`` of this process."""
    base = _base()
    extra = {name: package_version(name) for name in packages}
    return {"host": dict(base["host"]), "packages": {**base["packages"], **extra}}


def mismatches(report: dict[str, Any]) -> list[str]:
    """Lines naming each package whose version differs between the client and a worker
    (any package), or the client and the scheduler (the required ones: the scheduler
    needs no user libraries)."""
    mine = report["client"]["packages"]
    others = [("scheduler", report["scheduler"], REQUIRED)]
    others += [(worker, v, tuple(mine)) for worker, v in sorted(report["workers"].items())]
    lines = []
    for where, theirs, names in others:
        for name in names:
            if theirs.get("packages", {}).get(name) != mine.get(name):
                lines.append(f"{name}: client {mine.get(name)}, {where} "
                             f"{theirs.get('packages', {}).get(name)}")
    return lines
