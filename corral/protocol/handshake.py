"""The handshake that opens every connection: version check, identity, authentication.

Sequence (each message one frame: ``MAGIC``, a 2-byte version, then a msgpack map):

1. client → server  ``hello``: role, name, client nonce, compressions it accepts,
   whether it holds a token.
2. server → client  ``challenge``: role, name, server nonce, chosen compression and
   whether the server requires a token; or an error (another version, a token needed).
   Nothing in it is derived from the token.
3. client → server  ``proof``: ``HMAC(token, "corral-client" | server nonce | client
   nonce)`` (None without a token).
4. server → client  ``verdict``: ok with the server's own proof ``HMAC(token,
   "corral-server" | client nonce | server nonce)``, which the client checks (mutual
   authentication); or "authentication failed".

The side that connects proves first: a peer that merely connects learns nothing it
could use to guess a user-chosen token offline. Handshake messages are small msgpack
maps decoded with tight length limits and no extension types: nothing is unpickled
here. Only after step 4 does each side install the message codec that may unpickle,
with the larger post-authentication frame limits.

Shared memory (``corral.comm.shm``): a client that could share memory puts its host's id
in ``hello``; a server with a ``SharedListener`` on the same host answers in the
``verdict`` — sent only to a peer that has proved itself — with the listener's name and
a one-time ticket, which the client presents on the side channel it then opens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from corral.comm import DEFAULT_LIMITS, Comm, FrameLimits, shm
from corral.exceptions import (
    AuthenticationError,
    CommClosedError,
    CommError,
    HandshakeError,
    ProtocolError,
    VersionMismatchError,
)
from corral.protocol.serialize import MessageCodec
from corral.security import TOKEN_HINT, Security

MAGIC = b"CORRAL"
PROTOCOL_VERSION = 2  # 2: the connecting side proves first
_PREFIX = struct.Struct("<6sH")
MAX_HANDSHAKE_MESSAGE = 4096
NONCE_BYTES = 32
_FIELD_TYPES = (str, bytes, int, bool, type(None))
# What the server says when it refuses a peer's credentials (the client recognises them).
NO_TOKEN = "authentication failed: this server requires a token"
WRONG_TOKEN = "authentication failed: wrong token"


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """What one end brings to a handshake."""

    security: Security | None = None
    role: str = "client"
    name: str = ""
    compression: str | None = None
    limits: FrameLimits = DEFAULT_LIMITS
    share_memory: bool = False  # client: ask for a shared-memory side channel
    shared_listener: shm.SharedListener | None = None  # server: offer one


def encode(body: dict[str, Any]) -> list[bytes]:
    return [_PREFIX.pack(MAGIC, PROTOCOL_VERSION) + msgpack.packb(body)]


def decode(frames: list[Any]) -> dict[str, Any]:
    """Check magic and version, then decode a small, flat msgpack map."""
    if len(frames) != 1:
        raise ProtocolError(f"handshake message has {len(frames)} frames, expected 1")
    data = bytes(frames[0])
    if len(data) > MAX_HANDSHAKE_MESSAGE:
        raise ProtocolError(f"handshake message of {len(data)} bytes is too large")
    if len(data) < _PREFIX.size or data[: len(MAGIC)] != MAGIC:
        raise VersionMismatchError("peer is not speaking the corral protocol")
    _, version = _PREFIX.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise VersionMismatchError(
            f"peer speaks corral protocol version {version}; this side speaks {PROTOCOL_VERSION}"
        )
    try:
        body = msgpack.unpackb(
            data[_PREFIX.size :],
            raw=False,
            max_str_len=1024,
            max_bin_len=256,
            max_array_len=16,
            max_map_len=16,
            max_ext_len=0,
        )
    except Exception as e:
        raise ProtocolError(f"malformed handshake message: {e}") from None
    if not isinstance(body, dict) or not all(_flat_field(k, v) for k, v in body.items()):
        raise ProtocolError("malformed handshake message: expected a flat map")
    return body


def _flat_field(key: Any, value: Any) -> bool:
    if not isinstance(key, str):
        return False
    if isinstance(value, list):  # one level of lists of scalars, e.g. compression names
        return all(isinstance(v, _FIELD_TYPES) for v in value)
    return isinstance(value, _FIELD_TYPES)


def _proof(token: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(token, label + first + second, hashlib.sha256).digest()


def _nonce(body: dict[str, Any]) -> bytes:
    nonce = body.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ProtocolError("handshake message lacks a valid nonce")
    return nonce


def _finish(comm: Comm, peer: dict[str, Any], options: ConnectionOptions, chosen: Any) -> None:
    comm.peer_info = {"role": str(peer.get("role", "")), "name": str(peer.get("name", ""))}
    comm.codec = MessageCodec(
        allow_pickle=True,
        compression_name=chosen,
        max_frame_bytes=options.limits.max_frame_bytes,
    )
    comm.limits = options.limits


async def client_handshake(comm: Comm, options: ConnectionOptions) -> None:
    """Run the client side; on return ``comm`` carries Python objects."""
    token = options.security.token_bytes if options.security else None
    nonce = secrets.token_bytes(NONCE_BYTES)
    offered = [options.compression] if options.compression else []
    hello = {"role": options.role, "name": options.name, "nonce": nonce,
             "compression": offered, "auth": token is not None}
    if options.share_memory and comm.can_share() and shm.HOST_ID:
        hello["shm"] = shm.HOST_ID
    await comm.write_frames(encode(hello))
    challenge = decode(await _read(comm))
    if "error" in challenge:
        raise _error_from_server(str(challenge["error"]), comm, had_token=token is not None)
    server_nonce = _nonce(challenge)
    if token is not None and not challenge.get("auth"):
        raise AuthenticationError(
            f"authentication failed: server at {comm.peer_address} does not authenticate "
            "itself (it has no token), but this side was given one"
        )
    chosen = challenge.get("compression")
    if chosen is not None and chosen not in offered:
        raise ProtocolError(f"server chose compression {chosen!r} that was not offered")
    proof = None if token is None else _proof(token, b"corral-client", server_nonce, nonce)
    await comm.write_frames(encode({"proof": proof}))
    verdict = decode(await _read(comm))
    if not verdict.get("ok"):
        raise _error_from_server(str(verdict.get("error", "handshake refused")), comm,
                                 had_token=token is not None)
    if token is not None:
        server_proof = verdict.get("proof")
        expected = _proof(token, b"corral-server", nonce, server_nonce)
        if not isinstance(server_proof, bytes) or not hmac.compare_digest(server_proof, expected):
            raise AuthenticationError(
                f"authentication failed: server at {comm.peer_address} accepted our proof "
                "but could not prove it holds the token (an impostor?)"
            )
    _finish(comm, challenge, options, chosen)
    name, ticket = verdict.get("shm"), verdict.get("ticket")
    if "shm" in hello and isinstance(name, str) and isinstance(ticket, bytes):
        channel = await shm.open_channel(name, ticket, timeout=5.0)
        if channel is not None and not comm.attach_shared(channel):
            channel.close()


async def server_handshake(comm: Comm, options: ConnectionOptions) -> None:
    """Run the server side; raises ``HandshakeError``/``ProtocolError`` to reject the peer.

    The peer is told why it was rejected before the error is raised here. Nothing sent
    before the peer's proof is checked depends on the token.
    """
    token = options.security.token_bytes if options.security else None
    try:
        hello = decode(await _read(comm))
    except VersionMismatchError as e:
        await _reject(comm, str(e))
        raise
    if comm.refused:  # the transport let it in only to hear why: say it in our words
        await _reject(comm, comm.refused)
        raise HandshakeError(comm.refused)
    client_nonce = _nonce(hello)
    if token is not None and not hello.get("auth"):
        await _reject(comm, NO_TOKEN)
        raise AuthenticationError("authentication failed: peer sent no token")
    offered = hello.get("compression") or []
    if not isinstance(offered, list):
        raise ProtocolError("malformed handshake message: 'compression' must be a list")
    chosen = next((c for c in offered if c == options.compression), None)
    nonce = secrets.token_bytes(NONCE_BYTES)
    challenge: dict[str, Any] = {"role": options.role, "name": options.name, "nonce": nonce,
                                 "compression": chosen, "auth": token is not None}
    await comm.write_frames(encode(challenge))
    reply = decode(await _read(comm))
    verdict: dict[str, Any] = {"ok": True}
    if token is not None:
        proof = reply.get("proof")
        expected = _proof(token, b"corral-client", nonce, client_nonce)
        if not isinstance(proof, bytes) or not hmac.compare_digest(proof, expected):
            await _reject(comm, WRONG_TOKEN)
            raise AuthenticationError("authentication failed: peer sent a wrong token")
        verdict["proof"] = _proof(token, b"corral-server", client_nonce, nonce)
    listener = options.shared_listener
    if listener is not None and comm.can_share() and shm.same_host(hello.get("shm")):
        verdict["shm"] = listener.name
        verdict["ticket"] = listener.offer(comm.attach_shared)
    await comm.write_frames(encode(verdict))
    _finish(comm, hello, options, chosen)


async def _read(comm: Comm) -> list[Any]:
    try:
        return await comm.read_frames()
    except CommClosedError as e:
        raise HandshakeError(f"{comm.peer_address} closed the connection during the handshake "
                             f"({e}); does it expect TLS (tls://) or a token?") from e


async def _reject(comm: Comm, reason: str) -> None:
    try:
        await comm.write_frames(encode({"error": reason}))
        await comm.close()
    except CommError:
        comm.abort()


def _error_from_server(reason: str, comm: Comm, had_token: bool) -> HandshakeError:
    """The server's refusal, in words for whoever holds the refused end."""
    if reason == NO_TOKEN and not had_token:
        return AuthenticationError(f"authentication failed: the server at {comm.peer_address} "
                                   f"requires a token and none was given; {TOKEN_HINT}")
    if reason == WRONG_TOKEN:
        return AuthenticationError(f"authentication failed: the server at {comm.peer_address} "
                                   f"holds a different token; {TOKEN_HINT}")
    message = f"{reason} (server {comm.peer_address})"
    if reason.startswith("authentication failed"):
        return AuthenticationError(message)
    if "protocol" in reason:
        return VersionMismatchError(message)
    return HandshakeError(message)
