"""Where the dashboard listens: its address parsed, its sockets bound, its URL.

Plain ``socket`` work, without aiohttp: the dashboard's sockets listen from the moment a
cluster starts, while the dashboard itself loads on its first connection
(``corral.deploy.dashboard``).
"""

from __future__ import annotations

import errno
import logging
import socket

from corral.dashboard.access import WILDCARDS

logger = logging.getLogger("corral.dashboard")

BACKLOG = 128  # connections that may wait while the dashboard loads (aiohttp's default)


def parse_address(address: str, default_host: str) -> tuple[str, int]:
    """``":8787"`` → (default_host, 8787); ``"0.0.0.0:8787"``; ``"[::1]:0"``."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or default_host
    try:
        return host, int(port)
    except ValueError:
        raise ValueError(f"dashboard address {address!r} is not [HOST]:PORT") from None


def bind(host: str, port: int) -> list[socket.socket]:
    """Non-blocking listening sockets for every address of ``host`` at ``port`` (as
    asyncio's ``create_server`` binds them); if ``port`` is taken, a free port instead,
    with a warning."""
    try:
        return _bind_all(host, port)
    except OSError as e:
        if e.errno != errno.EADDRINUSE or port == 0:
            raise
    logger.warning("port %d is in use; serving the dashboard on a free port instead", port)
    return _bind_all(host, 0)


def _bind_all(host: str, port: int) -> list[socket.socket]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)  # "": every interface
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):  # each address once
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # the IPv4 address gets a socket of its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def url(host: str, port: int) -> str:
    shown = host if host not in WILDCARDS else "127.0.0.1"
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
