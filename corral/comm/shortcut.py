"""In-process shortcut: a TCP or TLS listener's address, reached without a socket.

A listener opened with ``shortcut_alias=True`` (servers do, unless ``comm.inproc-shortcut``
is off) also opens an in-process listener and registers its public address as an alias
of it. ``connect`` to that address from this process then gets an in-process comm to
the same ``on_comm``: the server runs the same handshake (authentication, limits) on
it, but no bytes go through the kernel. Over TLS, the two ends still run a TLS
handshake, in memory, so certificates are checked exactly as on the network; only the
encryption of a stream that never leaves the process is skipped.

The alias exists while the listener is open and only in the process that opened it (a
forked child starts with none).
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

from corral.comm.addressing import format_address, parse_address
from corral.comm.base import Comm, ComSink, Listener
from corral.comm.framing import FrameLimits
from corral.comm.inproc import InprocListener, connect_to, new_address
from corral.comm.tls import TLSListener, describe, hung_up
from corral.exceptions import TLSError

# Hosts under which a listener bound to every interface is also reached.
_LOOPBACK_NAMES = ("127.0.0.1", "localhost")
_MAX_TLS_ROUNDS = 16  # a TLS 1.2/1.3 handshake takes 2-4; more means it cannot finish


@dataclass(frozen=True)
class _Alias:
    inproc: InprocListener
    tls: ssl.SSLContext | None  # the server's context, for a tls:// listener
    refuse: Callable[[BaseException, str], None] | None  # logs a refused TLS peer


_aliases: dict[str, _Alias] = {}
_lock = threading.Lock()
os.register_at_fork(after_in_child=_aliases.clear)  # the child has no such listeners


class ShortcutListener(Listener):
    """A network listener plus the in-process listener that its address aliases."""

    def __init__(
        self, network: Listener, on_comm: ComSink, limits: FrameLimits,
        tls: ssl.SSLContext | None, bound_host: str,
    ) -> None:
        self.network = network
        self.inproc = InprocListener("inproc://", on_comm, limits, by_reference=True)
        refuse = network.refuse if isinstance(network, TLSListener) else None
        self._alias = _Alias(self.inproc, tls, refuse)
        self._bound_host = bound_host
        self._names: list[str] = []
        self.address = ""

    async def start(self) -> None:
        await self.network.start()
        self.address = self.network.address
        self.inproc.bind_loop()
        with _lock:
            for name in _names_of(self.address, self._bound_host):
                held = _aliases.get(name)
                # Another open listener here may hold it (the same port on another host
                # name); one whose loop is gone and that was never stopped does not.
                if held is None or held.inproc.loop is None or held.inproc.loop.is_closed():
                    _aliases[name] = self._alias
                    self._names.append(name)

    async def stop(self) -> None:
        with _lock:
            for name in self._names:
                if _aliases.get(name) is self._alias:
                    del _aliases[name]
        self._names.clear()
        await self.network.stop()


def _names_of(address: str, bound_host: str) -> list[str]:
    names = [address]
    if bound_host in ("", "0.0.0.0", "::"):
        parsed = parse_address(address)
        names += [format_address(parsed.scheme, host, parsed.port) for host in _LOOPBACK_NAMES]
    return names


def connect(address: str, limits: FrameLimits, tls: ssl.SSLContext | None) -> Comm | None:
    """An in-process comm to the listener ``address`` aliases, or None if none does.

    Raises ``TLSError`` where a TLS connection would: no credentials, or certificates
    that either side refuses (the server logs its refusals as its TLS listener does).
    """
    with _lock:
        alias = _aliases.get(address)
    loop = alias.inproc.loop if alias is not None else None
    if alias is None or loop is None or loop.is_closed():
        return None
    local = new_address()
    if alias.tls is not None:
        if tls is None:
            raise TLSError(f"{address} is a tls:// address: give TLS credentials "
                           "(--tls-ca-file/--tls-cert/--tls-key or Security(tls_...))")
        client_error, server_error = _tls_handshake(address, tls, alias.tls)
        if server_error is not None and alias.refuse is not None:
            loop.call_soon_threadsafe(alias.refuse, server_error, local)
        if client_error is not None:
            raise TLSError(describe(client_error, address))
        if server_error is not None:  # after the client's handshake had finished (TLS 1.3)
            raise hung_up(address)
    try:
        comm = connect_to(alias.inproc, limits, local)
    except RuntimeError:  # its loop closed just now: the socket will say what is left
        return None
    comm.peer_address = address  # what the caller asked for, in its errors and logs
    return comm


def _tls_handshake(
    address: str, client: ssl.SSLContext, server: ssl.SSLContext
) -> tuple[ssl.SSLError | None, ssl.SSLError | None]:
    """Run a TLS handshake between the two contexts in memory, as over a socket: each
    side checks the other's certificate. Returns each side's failure (None: it passed)."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    host = parse_address(address).host
    ends = (client.wrap_bio(client_in, client_out, server_hostname=host),
            server.wrap_bio(server_in, server_out, server_side=True))
    done = [False, False]
    errors: list[ssl.SSLError | None] = [None, None]
    for _ in range(_MAX_TLS_ROUNDS):
        for i, end in enumerate(ends):
            if not done[i] and errors[i] is None:
                try:
                    end.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as e:
                    errors[i] = e
        moved = client_out.pending + server_out.pending
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done) or not moved:  # finished, or no side can go further
            break
    else:
        errors[0] = errors[0] or ssl.SSLError("the in-process TLS handshake did not finish")
    return errors[0], errors[1]
