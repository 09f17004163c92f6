"""Logging refusals without letting a flood of them flood the log.

Every refused peer (a bad handshake, a failed TLS handshake, a garbage HTTP request)
is worth one line, until there are many: then the lines themselves become the attack
(a 20 s connection flood once wrote 23 000 of them). A ``RefusalLog`` writes the
first ``burst`` refusals of each ``window`` one line each, counts the rest by cause,
and when the window closes writes one summary line for it:

    refused 20762 handshakes in the last 10 s: 20700 backlog full, 62 bad magic
    (20752 not logged one by one)

Time comes from an injectable clock, so the policy is tested without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

WINDOW = 10.0  # seconds
BURST = 10  # refusals logged one by one per window


class RefusalLog:
    """One line per refusal, at most ``burst`` per ``window``; a summary for the rest.

    ``what`` names the refused things in the summary ("handshakes", "requests").
    """

    def __init__(self, logger: logging.Logger, what: str, *, window: float = WINDOW,
                 burst: int = BURST, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.window = window
        self.burst = burst
        self._clock = clock
        self._started = clock()
        self._counts: Counter[str] = Counter()
        self._logged = 0
        self._timer: asyncio.TimerHandle | None = None

    def refuse(self, cause: str, message: str, *args: Any, level: int = logging.WARNING,
               exc_info: Any = None) -> None:
        """Record one refusal for ``cause``; log ``message % args`` if the budget allows."""
        now = self._clock()
        if now - self._started >= self.window:
            self.flush(now)
        self._counts[cause] += 1
        if self._logged < self.burst:
            self._logged += 1
            self.logger.log(level, message, *args, exc_info=exc_info)
        elif self._timer is None:
            self._summarise_later(now)

    def flush(self, now: float | None = None) -> None:
        """Write the summary of the window so far (if anything went unlogged); start anew."""
        now = self._clock() if now is None else now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        total = sum(self._counts.values())
        if total > self._logged:
            causes = ", ".join(f"{n} {cause}" for cause, n in self._counts.most_common())
            self.logger.warning("refused %d %s in the last %.0f s: %s (%d not logged one by one)",
                                total, self.what, now - self._started, causes,
                                total - self._logged)
        self._counts.clear()
        self._logged = 0
        self._started = now

    def _summarise_later(self, now: float) -> None:
        """The summary must come even if the flood stops: arm a timer for the window's end."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test driving the clock): the next refusal flushes
            return
        self._timer = loop.call_later(max(self._started + self.window - now, 0), self.flush)

    def close(self) -> None:
        """Say what is pending now (the server is closing) and stop the timer."""
        self.flush()
