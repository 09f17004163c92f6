"""What the deployment flags of ``corral worker`` and ``corral scheduler`` mean:
``--nworkers auto``, ``--interface`` (and ``LocalCluster``'s host, ip, interface), port
ranges, durations (``--lifetime``, ``--idle-timeout``) and ``--pid-file`` (``--preload``
modules are the worker's: ``corral.worker.lifecycle``). Plain functions, so the
command line stays a list of flags and each meaning has one home and its tests.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from corral.exceptions import ListenError

_SECONDS = {"": 1, "ms": 1e-3, "s": 1, "sec": 1, "second": 1, "seconds": 1,
            "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600,
            "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}


def parse_duration(text: str) -> float:
    """``'90'`` / ``'90s'`` → 90.0, ``'5m'`` → 300.0, ``'1.5 hours'`` → 5400.0."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SECONDS:
        raise ValueError(f"not a duration: {text!r} (try 90s, 30m or 2h)")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def auto_nworkers(cores: int) -> tuple[int, int]:
    """``--nworkers auto``: (processes, threads each) for ``cores`` cores. Up to four
    cores, a process per core; beyond, the smallest divisor of ``cores`` that is at
    least its square root: as many processes as threads each, roughly, so neither the
    GIL (few processes) nor memory and transfers (many) dominate."""
    if cores <= 4:
        return max(cores, 1), 1
    processes = min(f for f in range(1, cores + 1) if cores % f == 0 and f >= math.sqrt(cores))
    return processes, cores // processes


def parse_ports(text: str | None) -> list[int]:
    """``None``/``'0'`` → [0] (any free port); ``'8000'`` → [8000]; ``'8000:8010'`` →
    8000 to 8010 inclusive, tried in order."""
    if text is None or text.strip() in ("", "0"):
        return [0]
    low, sep, high = text.partition(":")
    try:
        first = int(low)
        last = int(high) if sep else first
    except ValueError:
        raise ValueError(f"not a port or a range of ports: {text!r} (try 8000 or "
                         "8000:8010)") from None
    if not 0 < first <= last < 65536:
        raise ValueError(f"not a port or a range of ports: {text!r}")
    return list(range(first, last + 1))


async def listen_in_range(start: Callable[[str], Awaitable[None]], scheme: str, host: str,
                          ports: list[int], what: str) -> None:
    """``await start(address)`` on the first of ``ports`` free on ``host``."""
    for port in ports:
        try:
            await start(f"{scheme}://{_bracketed(host)}:{port}")
            return
        except ListenError:
            if len(ports) == 1:
                raise
    raise ListenError(f"no free port for the {what} on {host} in {ports[0]}-{ports[-1]}")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def interface_address(interface: str) -> str:
    """The IPv4 address of network interface ``interface`` (``eth0``, ``ib0``), else its
    IPv6 one; ``ValueError`` naming the interfaces there are if it has none."""
    import psutil

    interfaces = psutil.net_if_addrs()
    if interface not in interfaces:
        raise ValueError(f"no network interface {interface!r}; there are: "
                         f"{', '.join(sorted(interfaces))}")
    by_family = {a.family: a.address for a in interfaces[interface]}
    for family in (socket.AF_INET, socket.AF_INET6):
        if family in by_family:
            return by_family[family].split("%")[0]
    raise ValueError(f"network interface {interface!r} has no IP address")


def listen_host(host: str | None, ip: str | None, interface: str | None) -> str:
    """The one host to listen on, from dask's three ways to say it (loopback if none)."""
    given = {name: value for name, value in
             (("host", host), ("ip", ip), ("interface", interface)) if value is not None}
    if len(given) > 1:
        raise ValueError(f"give one of host=, ip= and interface=, not {' and '.join(given)}")
    if interface is not None:
        return interface_address(interface)
    return host or ip or "127.0.0.1"


# -- pid files --------------------------------------------------------------------------------


@contextlib.contextmanager
def writing_pid(path: str | None) -> Iterator[None]:
    """Write this process's id to ``path`` while the block runs (nothing if None)."""
    if path is None:
        yield
        return
    Path(path).write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
