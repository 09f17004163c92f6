"""Memory limits: one parser for ``--memory-limit``, ``memory_limit=`` and the config.

Accepted values:

* ``"auto"`` (the default): this machine's memory, or the cgroup's limit if lower, shared
  among the workers started together by their threads (a worker with 2 of the 8
  threads gets a quarter);
* a fraction of that memory, not shared: ``0.5``, ``"0.5"``;
* a number of bytes: ``1e9``, ``"4GiB"``, ``"500 MB"``, ``2_000_000_000``;
* ``0``, ``"0"``, ``None``, ``"none"``: no limit (no spilling, pausing or restarts).

A limit below ``MIN_MEMORY_LIMIT`` is refused with the reason: the interpreter and
libraries of a worker alone take ~50 MiB, so under it the worker would be paused or
restarted before it ran anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import psutil

from corral.exceptions import BadMemoryLimit

MIN_MEMORY_LIMIT = 100 * 2**20

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip

_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def parse_bytes(text: str | float) -> int:
    """``'4GiB'`` → 4294967296; ``'1.5 GB'`` → 1500000000; ``1e9`` → 1000000000."""
    if isinstance(text, int | float):
        return int(text)
    number = r"\d+(?:\.\d*)?(?:e\d+)?|\.\d+"
    match = re.fullmatch(rf"\s*({number})\s*([a-zA-Z]*)\s*", text.replace("_", ""))
    if not match or match.group(2).lower() not in _UNITS:
        raise BadMemoryLimit(f"not a size: {text!r} (try 4GiB or 500MB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def system_memory() -> int:
    """This machine's memory, or its cgroup's memory limit if that is lower."""
    total = psutil.virtual_memory().total
    for name in _CGROUP_FILES:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def parse_memory_limit(value: str | float | None, *, share: float = 1.0) -> int:
    """The limit in bytes (0: none) for a worker owning ``share`` of this host's threads.

    Raises ``BadMemoryLimit`` (one line saying why) for anything else, or a limit under
    ``MIN_MEMORY_LIMIT``.
    """
    if value is None or value is False:
        return 0
    text = value.strip().lower() if isinstance(value, str) else value
    if text in ("none", ""):
        return 0
    if text == "auto":
        limit = int(system_memory() * min(1.0, max(share, 0.0)))
    elif isinstance(text, str) and re.fullmatch(r"0?\.\d+|1\.0*", text):
        limit = int(system_memory() * float(text))
    elif isinstance(text, float) and 0 < text <= 1:
        limit = int(system_memory() * text)
    else:
        limit = parse_bytes(text)
    if limit < 0:
        raise BadMemoryLimit(f"a memory limit cannot be negative: {value!r}")
    if 0 < limit < MIN_MEMORY_LIMIT:
        raise BadMemoryLimit(
            f"memory limit {value!r} ({limit / 2**20:.0f} MiB) is too small to start a "
            f"worker: its interpreter and libraries alone take ~50 MiB, so it would be paused "
            f"or restarted before running anything; give at least "
            f"{MIN_MEMORY_LIMIT // 2**20} MiB, or 0 for no limit")
    return limit
