"""TLS transport (``tls://``): the TCP transport inside a TLS session.

The caller brings the ``ssl.SSLContext`` (built from ``Security``); this module only
carries bytes. Its listener accepts connections itself so it can look at the first
byte before starting TLS: a peer that speaks plaintext is handed on as a comm marked
``refused``, so the handshake can tell it in words it understands, instead of the
peer seeing a connection that dies for no stated reason. Every failed TLS handshake
becomes a ``TLSError`` naming the likely cause, and one log line on the server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from corral import config
from corral.comm.addressing import format_address, parse_address
from corral.comm.base import Backend, Comm, ComSink, Listener
from corral.comm.framing import FrameLimits
from corral.comm.tcp import (
    TCPComm,
    _all_interfaces_socket,
    _FrameProtocol,
    advertised_host,
    resolve_first,
)
from corral.exceptions import TLSError
from corral.refusals import RefusalLog

logger = logging.getLogger("corral.comm")

TLS_RECORD_HANDSHAKE = 0x16  # the first byte of every TLS ClientHello
PLAINTEXT_REFUSAL = "this server only accepts TLS: connect to its tls:// address with a certificate"

# OpenSSL reason codes → what the person at the rejected end should do about it.
_HINTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate "
    "(give --tls-cert/--tls-key, or Security(tls_cert=..., tls_key=...))",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the other end does not trust our certificate "
    "(it was signed by a different CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the other end rejected our certificate",
    "CERTIFICATE_VERIFY_FAILED": "the other end's certificate failed our checks "
    "(CA: --tls-ca-file)",
    "WRONG_VERSION_NUMBER": "the other end does not speak TLS (a plaintext tcp:// address?)",
    "UNEXPECTED_EOF_WHILE_READING": "the other end closed the connection during the TLS "
    "handshake (a plaintext tcp:// server, or it refused our certificate)",
    "HTTP_REQUEST": "the peer sent an HTTP request to a TLS port",
}


def describe(error: BaseException, where: str) -> str:
    """A one-line account of a TLS failure with ``where`` (an address) in it."""
    hint = _HINTS.get(getattr(error, "reason", None) or "")
    if isinstance(error, ssl.SSLCertVerificationError):
        hint = f"{_HINTS['CERTIFICATE_VERIFY_FAILED']}: {error.verify_message}"
    elif hint is None and isinstance(error, ConnectionResetError | ssl.SSLEOFError):
        hint = _HINTS["UNEXPECTED_EOF_WHILE_READING"]
    return f"TLS with {where} failed: {hint or error}"


def _reason(error: BaseException) -> str:
    """The cause a failed TLS handshake is counted under in summaries."""
    if isinstance(error, TimeoutError):
        return "TLS handshake timeout"
    return str(getattr(error, "reason", None) or type(error).__name__)


class _TLSFrameProtocol(_FrameProtocol):
    """TLS 1.3 checks a client's certificate after the client's handshake has finished, so
    a refused client learns it only when the server hangs up before saying anything:
    on the client side, report that as what it almost surely is."""

    def __init__(self, limits: FrameLimits, server: str | None = None) -> None:
        super().__init__(limits)
        self._server = server  # set on the client side

    def eof_received(self) -> bool:
        self._refused_before_a_word(None)
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._refused_before_a_word(exc)
        super().connection_lost(exc)

    def _refused_before_a_word(self, exc: Exception | None) -> None:
        if self.error is not None or self._received or self._server is None:
            return
        if isinstance(exc, ssl.SSLError):
            self.error = TLSError(describe(exc, self._server))
        else:
            self.error = hung_up(self._server)


def hung_up(server: str) -> TLSError:
    """What a client whose TLS handshake finished hears when the server then hangs up."""
    return TLSError(
        f"TLS with {server} failed: the server hung up right after the TLS "
        "handshake: it did not accept our client certificate (none given, or "
        "signed by another CA; see --tls-cert/--tls-key)"
    )


async def _first_byte(sock: socket.socket) -> int | None:
    """The first byte the peer sent, left unread in the socket (None: it hung up).

    Waits on a duplicate of the socket: uvloop refuses to build a transport on a file
    descriptor that has been watched with ``add_reader``.
    """
    loop = asyncio.get_running_loop()
    with sock.dup() as watched:
        while True:
            try:
                data = watched.recv(1, socket.MSG_PEEK)
                return data[0] if data else None
            except BlockingIOError:
                readable = loop.create_future()
                loop.add_reader(watched.fileno(), _set_once, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(watched.fileno())


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _listening_socket(host: str, port: int) -> socket.socket:
    if not host:
        sock = _all_interfaces_socket(port)
    else:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class TLSListener(Listener):
    def __init__(
        self, address: str, on_comm: ComSink, limits: FrameLimits, context: ssl.SSLContext
    ) -> None:
        parsed = parse_address(address)
        self._host, self._port = parsed.host, parsed.port or 0
        self._on_comm = on_comm
        self._limits = limits
        self._context = context
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._upgrading: set[asyncio.Task[None]] = set()
        self._refusals = RefusalLog(logger, "TLS handshakes")
        self.address = ""

    async def start(self) -> None:
        self._sock = _listening_socket(self._host, self._port)
        port = self._sock.getsockname()[1]
        self.address = format_address("tls", advertised_host(self._host), port)
        self._accepting = asyncio.ensure_future(self._accept_forever())

    async def _accept_forever(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as e:  # e.g. out of file descriptors: keep the listener alive
                self._refusals.refuse("accept failed", "accept on %s failed: %s",
                                      self.address, e)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.ensure_future(self._upgrade(conn))
            self._upgrading.add(task)
            task.add_done_callback(self._upgrading.discard)

    async def _upgrade(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            peer = format_address("tls", *conn.getpeername()[:2])
        except OSError:
            conn.close()
            return
        # Keep our own reference: uvloop returns its TLS wrapper, not our protocol.
        protocol = _TLSFrameProtocol(self._limits)
        try:
            async with asyncio.timeout(config.get("comm.tls-handshake-timeout")):
                first = await _first_byte(conn)
                if first is None:
                    conn.close()
                    return
                if first != TLS_RECORD_HANDSHAKE:
                    await loop.connect_accepted_socket(lambda: protocol, conn)
                    comm = TCPComm(protocol, "tls")
                    comm.refused = PLAINTEXT_REFUSAL  # the server's handshake says so, and logs
                    self._on_comm(comm)
                    return
                await loop.connect_accepted_socket(
                    lambda: protocol, conn, ssl=self._context,
                    ssl_handshake_timeout=config.get("comm.tls-handshake-timeout"),
                )
        except (OSError, TimeoutError) as e:
            self.refuse(e, peer)
            conn.close()
            return
        self._on_comm(TCPComm(protocol, "tls"))

    def refuse(self, error: BaseException, peer: str) -> None:
        """Log a failed TLS handshake with ``peer`` (at most a burst a window)."""
        self._refusals.refuse(_reason(error), "refused: %s", describe(error, f"peer {peer}"))

    async def stop(self) -> None:
        self._refusals.close()
        for task in (self._accepting, *self._upgrading):
            if task is not None:
                task.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class TLSBackend(Backend):
    async def connect(
        self, address: str, limits: FrameLimits, tls: ssl.SSLContext | None = None
    ) -> Comm:
        if tls is None:
            raise TLSError(f"{address} is a tls:// address: give TLS credentials "
                           "(--tls-ca-file/--tls-cert/--tls-key or Security(tls_...))")
        parsed = parse_address(address)
        loop = asyncio.get_running_loop()
        protocol = _TLSFrameProtocol(limits, address)  # ours, not uvloop's TLS wrapper
        port = parsed.network_port()
        await resolve_first(parsed.host, port)
        try:
            await loop.create_connection(
                lambda: protocol, parsed.host, port, ssl=tls,
                server_hostname=parsed.host,
                ssl_handshake_timeout=config.get("comm.tls-handshake-timeout"),
            )
        except ssl.SSLError as e:
            raise TLSError(describe(e, address)) from None
        except ConnectionResetError as e:  # refused mid-handshake: the server hung up
            raise TLSError(describe(e, address)) from None
        return TCPComm(protocol, "tls")

    def listener(
        self, address: str, on_comm: ComSink, limits: FrameLimits,
        tls: ssl.SSLContext | None = None,
    ) -> Listener:
        if tls is None:
            raise TLSError(f"listening on {address} needs a certificate and key "
                           "(--tls-cert/--tls-key and --tls-ca-file)")
        return TLSListener(address, on_comm, limits, tls)

