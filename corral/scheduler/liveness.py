"""Who is still there: workers silent for too long, and clients gone past their grace.

Time only arrives in stimuli (``now``): a worker is seen when it joins and at each
heartbeat; a client that drops off without a goodbye gets a deadline. On each ``Tick``
the state machine asks what has expired by then and removes it. ``worker_ttl=None``
never expires a worker (a simulation or test that sends no heartbeats).

Pure bookkeeping: no clock, no I/O; costs O(workers + clients awaiting expiry) a tick.
"""

from __future__ import annotations


class Liveness:
    def __init__(self, *, worker_ttl: float | None, client_grace: float) -> None:
        self.worker_ttl = worker_ttl
        self.client_grace = client_grace
        self.last_seen: dict[str, float] = {}  # worker → when last heard from
        self.client_deadlines: dict[str, float] = {}  # client → when its keys go

    def worker_seen(self, worker: str, now: float) -> None:
        """Heard from ``worker`` at ``now`` (ignored for a worker not joined)."""
        if worker in self.last_seen and now > self.last_seen[worker]:
            self.last_seen[worker] = now

    def worker_joined(self, worker: str, now: float) -> None:
        self.last_seen[worker] = now

    def worker_left(self, worker: str) -> None:
        self.last_seen.pop(worker, None)

    def silent_workers(self, now: float) -> list[str]:
        """Workers not heard from for longer than ``worker_ttl`` at ``now``."""
        ttl = self.worker_ttl
        if ttl is None:
            return []
        return [w for w, seen in self.last_seen.items() if now - seen > ttl]

    def client_disconnected(self, client: str, now: float) -> None:
        self.client_deadlines[client] = now + self.client_grace

    def client_connected(self, client: str) -> None:
        """``client`` is (back) here, or gone for good: no deadline for it."""
        self.client_deadlines.pop(client, None)

    def expired_clients(self, now: float) -> list[str]:
        """Clients whose grace has run out at ``now``; forgotten here."""
        gone = [c for c, deadline in self.client_deadlines.items() if deadline <= now]
        for client in gone:
            del self.client_deadlines[client]
        return gone
