"""How a worker keeps trying to reach its scheduler: a pure policy, the clock passed in.

Rules
-----
* Attempt after attempt, without end, unless ``death_timeout`` is set: then the worker
  gives up once that long has passed without reaching the scheduler (dask's option,
  and its default of None: a fleet outlives any scheduler outage).
* Each attempt is one ``connect`` and registration within a window of 1 s that doubles
  to a cap of 10 s (so a slow handshake gets its time too). Inside a window the
  transport probes the address again after 10 ms, doubling to a cap of 1 s (jittered),
  so a scheduler that comes back is found within a couple of seconds.
* The first failure is said at once, in one line naming the address and the cause
  (connection refused, no answer, unknown host, ...); after that each cause at most once
  every ``REPORT_EVERY`` seconds: a long (or flapping) outage is not a log flood.
"""

from __future__ import annotations

import socket

from corral.exceptions import (
    AuthenticationError,
    CommClosedError,
    ConnectTimeoutError,
    TLSError,
    VersionMismatchError,
)

FIRST_WINDOW = 1.0
WINDOW_CAP = 10.0
REPORT_EVERY = 60.0

# Refusals that waiting will not change: wrong credentials, not a corral scheduler.
FATAL = (AuthenticationError, VersionMismatchError, TLSError)


class Retry:
    """One outage: how long the next attempt may take, and which failures to report."""

    def __init__(self, death_timeout: float | None, now: float) -> None:
        self.death_timeout = death_timeout
        self.since = now
        self.attempts = 0
        self._window = FIRST_WINDOW
        self._said: dict[str, float] = {}  # cause → when it was last reported

    def window(self, now: float) -> float | None:
        """The time limit of the next attempt; None once it is time to give up."""
        if self.death_timeout is None:
            return self._window
        left = self.since + self.death_timeout - now
        return min(self._window, left) if left > 0 else None

    def failed(self, now: float, cause: str) -> bool:
        """Record a failed attempt; True if it should be reported."""
        self.attempts += 1
        self._window = min(self._window * 2, WINDOW_CAP)
        last = self._said.get(cause)
        if last is None or now - last >= REPORT_EVERY:
            self._said[cause] = now
            return True
        return False


def describe(error: BaseException) -> str:
    """Why an attempt failed, in a few words a user can act on."""
    if isinstance(error, ConnectTimeoutError) and error.__cause__ is not None:
        error = error.__cause__  # the last connection attempt's own error
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is a scheduler running there?)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror})"
    if isinstance(error, ConnectTimeoutError):
        return "no answer to the handshake (timed out)"
    if isinstance(error, TimeoutError):
        return "no answer (timed out)"
    if isinstance(error, CommClosedError):
        return f"the connection closed during registration ({error})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error) or type(error).__name__
