"""``Holdings``: which keys a client's futures hold, and the releases it still owes.

Every ``Future`` of a key counts once; when the last one goes, the key is released. The
scheduler hears of releases in batches: the first release since the last batch asks
the client's loop for one (``release`` returns True), and releases meanwhile join it,
so dropping the 10 000 futures ``gather`` returned costs a few messages, not 10 000.
Thread-safe: futures are made and dropped in any thread.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Hashable

from corral.client.future import CANCELLED, FutureState


class Holdings:
    def __init__(self) -> None:
        self.states: dict[Hashable, FutureState] = {}
        self._count: dict[Hashable, int] = defaultdict(int)
        self._released: list[Hashable] = []  # not yet told to the scheduler
        self._batch_due = False  # the loop was asked for ``take_released``
        self._lock = threading.Lock()

    def acquire(self, key: Hashable) -> FutureState:
        with self._lock:
            self._count[key] += 1
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = FutureState()
            elif state.status == CANCELLED:  # submitted again: pending again
                state.reset()
            return state

    def release(self, key: Hashable) -> bool:
        """One future of ``key`` is gone; True if the caller must have the loop call
        ``take_released`` (none is due yet)."""
        with self._lock:
            self._count[key] -= 1
            if self._count[key] > 0:
                return False
            del self._count[key]
            self.states.pop(key, None)
            self._released.append(key)
            due, self._batch_due = self._batch_due, True
            return not due

    def owes_releases(self) -> bool:
        return bool(self._released)

    def take_released(self) -> tuple[Hashable, ...]:
        """The keys released since the last call, to tell the scheduler now."""
        with self._lock:
            keys, self._released, self._batch_due = tuple(self._released), [], False
        return keys
