"""The last lines a process logged under ``corral``, kept for a client to read
(``client.get_worker_logs()``, ``client.get_scheduler_logs()``).

Several servers in one process (a ``LocalCluster`` without processes) each attach a
ring and each sees every line the process logs under ``corral``.
"""

from __future__ import annotations

import logging
from collections import deque


class LogRing(logging.Handler):
    """The last ``maxlen`` records of a logger, as (level name, message)."""

    def __init__(self, maxlen: int = 1000) -> None:
        super().__init__()
        self.lines: deque[tuple[str, str]] = deque(maxlen=maxlen)
        self.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - "
                                            "%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.levelname, self.format(record)))
        except Exception:  # a bad format argument: never let logging break a server
            self.handleError(record)

    def last(self, n: int | None = None) -> list[tuple[str, str]]:
        """The last ``n`` lines kept (all of them if None), oldest first."""
        lines = list(self.lines)
        return lines if n is None else lines[-n:] if n > 0 else []

    def attach(self) -> None:
        logging.getLogger("corral").addHandler(self)

    def detach(self) -> None:
        logging.getLogger("corral").removeHandler(self)
