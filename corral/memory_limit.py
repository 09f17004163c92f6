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

from corral import config, utils
from corral.exceptions import BadMemoryLimit
from corral.worker.thresholds import Thresholds

MIN_MEMORY_LIMIT = 100 * 2**20

_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def parse_bytes(text: str | float) -> int:
    """``corral.utils.parse_bytes``, refusing with ``BadMemoryLimit``."""
    try:
        return utils.parse_bytes(text)
    except ValueError as e:
        raise BadMemoryLimit(str(e)) from None


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


def configured_thresholds(**given: str | float | bool | None) -> Thresholds:
    """Thresholds from options: a fraction, ``"0.7"``, or ``"false"``/``False`` to turn
    one off; those not given (None) are the configured ones (``worker.memory.<name>``)."""
    chosen: dict[str, float | None] = {}
    for name in ("target", "spill", "pause", "terminate"):
        value = config.fallback(given.pop(name, None), f"worker.memory.{name}")
        if value is None:
            chosen[name] = None
            continue
        if value is False or str(value).strip().lower() in ("false", "none", "off", "0"):
            chosen[name] = None
            continue
        try:
            chosen[name] = float(value)
        except ValueError:
            raise ValueError(f"memory threshold {name}={value!r}: give a fraction such as "
                             f"0.7, or false to turn it off") from None
    if given:
        raise TypeError(f"unknown memory thresholds: {sorted(given)}")
    return Thresholds(**chosen)
