"""Every exception corral raises on purpose, in one place.

    CorralError
    ├── CommError (OSError)                    the transport failed; the OS error is the cause
    │   ├── CommClosedError (ConnectionError)  the peer is gone or the comm was closed
    │   ├── ConnectTimeoutError (TimeoutError) connect() gave up after retrying
    │   ├── ListenError                        cannot listen there (address in use, no such host)
    │   └── HandshakeError (ConnectionError)   the connection handshake failed
    │       ├── VersionMismatchError           not a corral peer, or another protocol version
    │       ├── AuthenticationError            wrong, missing or unexpected credentials
    │       └── TLSError                       TLS refused: untrusted or missing certificate,
    │                                          or a peer that does not speak TLS
    ├── ProtocolError                          bytes on the wire that break the protocol
    │   ├── FrameLimitError                    a frame count or size over the configured limit
    │   └── DeserializationError               a well-framed message that cannot be decoded
    ├── CredentialsFileError (PermissionError) a scheduler file that cannot be written safely
    ├── UnknownOperationError (KeyError)       a message named an op the server has no handler for
    ├── InvalidMessage (ValueError)            a message's fields are not what its op declares
    ├── BadMemoryLimit (ValueError)            a memory limit that is unreadable or too small
    ├── JobQueueError (RuntimeError)           a batch system (sbatch, qsub, bsub) refused a command
    ├── LostWritesError (RuntimeError)         a graph writes into an object only the client holds
    ├── InvalidTransition                      a state machine was asked for an impossible move
    ├── UnknownStimulus (TypeError)            a stimulus type no handler is listed for
    ├── DataLostError                          the only copy of unrecomputable data is gone
    ├── KilledWorker                           a task was running on too many workers that died
    ├── ShuffleFailed                          a p2p shuffle lost a worker or pieces; rerun it
    ├── ClientClosedError                      a client (or one of its futures) used after close()
    ├── FutureCancelledError (concurrent.futures.CancelledError)
    │                                          a future's task and data are gone (restart)
    └── RemoteError                            a remote exception that could not be rebuilt locally

OS and asyncio errors are mapped onto this tree at the transport boundary
(``corral.comm``), so callers catch ``CommError`` (or a subclass) rather than a zoo of
socket errors; the OS error stays chained as ``__cause__``. ``CommError`` is still an
``OSError``, so code that catches ``OSError`` keeps working.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base class of every corral error."""


class CommError(CorralError, OSError):
    """The transport failed: a connection could not be made, kept or listened for."""


class CommClosedError(CommError, ConnectionError):
    """The comm was closed, locally or by the peer, or the peer vanished."""


class ConnectTimeoutError(CommError, TimeoutError):
    """Could not connect to an address within the timeout, despite retrying."""


class ListenError(CommError):
    """Could not listen at an address: it is in use, or not one of this machine's."""


class ProtocolError(CorralError):
    """The peer sent bytes that do not follow corral's wire protocol."""


class FrameLimitError(ProtocolError):
    """A message announced more frames or bytes than the configured limits allow."""


class DeserializationError(ProtocolError):
    """A complete message arrived but could not be decoded into Python objects."""


class HandshakeError(CommError, ConnectionError):
    """The connection handshake did not complete."""


class VersionMismatchError(HandshakeError):
    """The peer is not a corral peer, or speaks another protocol version."""


class AuthenticationError(HandshakeError):
    """Authentication failed: wrong or missing token, or a peer that could not prove itself."""


class TLSError(HandshakeError):
    """A TLS handshake failed; the message names the likely cause."""


class CredentialsFileError(CorralError, PermissionError):
    """A scheduler file could not be written without exposing the token (see credentials)."""


class UnknownOperationError(CorralError, KeyError):
    """A message asked for an op that the server has no handler for."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidMessage(CorralError, ValueError):
    """A peer's message has a field of the wrong type or range, or a missing or unknown one."""


class RemoteError(CorralError):
    """A handler raised an exception that could not be sent back as itself.

    Carries the remote type name, message and traceback text instead.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str = ""):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[object, ...]:
        return (RemoteError, (self.type_name, self.message, self.traceback_text))


class InvalidTransition(CorralError):
    """A state machine was asked to move a task between states that are not connected."""


class UnknownStimulus(CorralError, TypeError):
    """A state machine was handed a stimulus type its dispatch table does not list."""


class DataLostError(CorralError):
    """The only copy of a key was lost and it cannot be recomputed (e.g. scattered data)."""


class KilledWorker(CorralError):
    """A task was running on ``allowed_failures`` workers that died; it is not tried again."""


class ShuffleFailed(CorralError):
    """A peer-to-peer shuffle cannot finish as placed: a worker it sends to is gone, or
    an output partition's owner lacks pieces. ``dask``'s ``get`` on corral reruns the
    graph with a fresh placement (``corral.shuffle``); ``worker`` names the suspect."""

    def __init__(self, message: str, worker: str = "") -> None:
        super().__init__(message, worker)
        self.message, self.worker = message, worker

    def __str__(self) -> str:
        return self.message


class ClientClosedError(CorralError):
    """A client, or a future of it, was used after the client was closed."""


class BadMemoryLimit(CorralError, ValueError):
    """A memory limit that cannot be parsed, or is too small to start a worker."""


class JobQueueError(CorralError, RuntimeError):
    """A batch system's command (sbatch, squeue, scancel, qsub, bsub, ...) failed; the
    message names the command and what it said."""


class LostWritesError(CorralError, RuntimeError):
    """A graph writes into an object that lives in the client's process (an in-memory
    zarr array): each worker would write into its own copy, and the writes would be lost.
    Refused before anything runs."""


def __getattr__(name: str) -> type[CorralError]:
    """``FutureCancelledError``, made on first use: it is also a
    ``concurrent.futures.CancelledError`` (dask's ``CancelledError`` catches it), and
    importing ``concurrent.futures`` loads logging and threading, which the pure state
    machines importing this module do without."""
    if name != "FutureCancelledError":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import concurrent.futures

    class FutureCancelledError(CorralError, concurrent.futures.CancelledError):
        """What ``result()`` raises for a future cancelled after the fact, finished or
        not: ``client.restart()`` dropped its task and data. Submit the work again."""

    FutureCancelledError.__qualname__ = name
    globals()[name] = FutureCancelledError
    return FutureCancelledError
