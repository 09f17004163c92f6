"""Parsing and formatting of addresses: ``tcp://host:port``, ``host:port``, ``inproc://…``.

An address is always a string with a scheme once it leaves this module; bare
``host:port`` strings and port numbers are accepted for convenience and mean TCP.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_SCHEME = "tcp"


class Address(NamedTuple):
    scheme: str
    host: str  # '' means all interfaces (listen) for tcp; the location for inproc
    port: int | None

    def network_port(self) -> int:
        """The port of a tcp:// or tls:// address (an inproc:// one has none)."""
        if self.port is None:
            raise ValueError(f"{self.scheme}://{self.host} has no port")
        return self.port


def parse_address(addr: str | int | tuple[str, int]) -> Address:
    """Split an address into scheme, host and port.

    Accepts ``8000``, ``':8000'``, ``'127.0.0.1:8000'``, ``'tcp://[::1]:8000'``,
    ``'tcp://:8000'``, ``('127.0.0.1', 8000)`` and ``'inproc://…'``.
    """
    if isinstance(addr, bool):
        raise TypeError(f"not an address: {addr!r}")
    if isinstance(addr, int):
        return Address(DEFAULT_SCHEME, "", _check_port(addr, addr))
    if isinstance(addr, tuple):
        host, port = addr
        return Address(DEFAULT_SCHEME, host, _check_port(port, addr))
    if not isinstance(addr, str):
        raise TypeError(f"not an address: {addr!r}")
    scheme, sep, rest = addr.partition("://")
    if not sep:
        scheme, rest = DEFAULT_SCHEME, addr
    if scheme == "inproc":
        return Address("inproc", rest, None)
    if scheme not in ("tcp", "tls"):
        raise ValueError(f"unknown address scheme {scheme!r} in {addr!r}")
    host, port = _split_host_port(rest, addr)
    return Address(scheme, host, port)


def _split_host_port(rest: str, original: str) -> tuple[str, int]:
    if rest.startswith("["):  # IPv6 literal: [::1]:8000
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise ValueError(f"malformed IPv6 address {original!r}; expected [host]:port")
        port_text = tail[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise ValueError(f"address {original!r} has no port")
        if ":" in host:
            raise ValueError(f"IPv6 host in {original!r} must be written in brackets: [{host}]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port {port_text!r} in address {original!r}") from None
    return host, _check_port(port, original)


def _check_port(port: int, original: object) -> int:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port out of range in address {original!r}")
    return port


def format_address(scheme: str, host: str, port: int | None = None) -> str:
    if port is None:
        return f"{scheme}://{host}"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def normalize_address(addr: str | int | tuple[str, int]) -> str:
    """The canonical string form of an address: ``'127.0.0.1:80'`` → ``'tcp://127.0.0.1:80'``."""
    a = parse_address(addr)
    return format_address(a.scheme, a.host, a.port)
