"""``Holdings``: which keys a client's futures hold, and the releases it still owes.

Every ``Future`` of a key counts once; when the last one goes, the key is released.
Futures dropped in the caller's thread (not the loop's) are told to the scheduler in
batches: a release starts a batch, which the client's loop sends in one message, and
the releases after it join that batch until the batch is sent or the client queues
anything else for the loop. So dropping the 10 000 futures ``gather`` returned is a
few messages, not 10 000, and every message still leaves in the order the caller's
thread made it: ``submit(f, x)`` then dropping ``x`` sends the task before the release
of its input, and dropping ``x`` then submitting its key again sends the release first.
Thread-safe: futures are made and dropped in any thread.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Hashable

from corral.client.future import CANCELLED, FutureState


class Holdings:
    def __init__(self) -> None:
        self.states: dict[Hashable, FutureState] = {}
        self._count: dict[Hashable, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._marks = itertools.count()  # (``next`` is atomic: no lock needed to queue)
        self._last_queued = -1  # the mark of the last callback queued for the loop
        self._batch: list[Hashable] | None = None  # the batch releases may still join
        self._batch_mark = -2

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
        """One future of ``key`` is gone; whether it was the last."""
        with self._lock:
            return self._released(key)

    def release_later(self, key: Hashable) -> list[Hashable] | None:
        """``release``, from a thread other than the loop's, for a batch: None if it is
        not the last future of ``key`` or joined a batch under way; else a new batch,
        which the caller must have the loop send (``take``) after what it queued so far."""
        with self._lock:
            if not self._released(key):
                return None
            if self._batch is not None and self._batch_mark == self._last_queued:
                self._batch.append(key)
                return None
            self._batch, self._batch_mark = [key], self.queued()
            return self._batch

    def queued(self) -> int:
        """A callback is being queued for the loop: releases after it are a new batch."""
        mark = self._last_queued = next(self._marks)
        return mark

    def take(self, batch: list[Hashable]) -> tuple[Hashable, ...]:
        """On the loop: the keys of ``batch``, which no release may join any more."""
        with self._lock:
            if self._batch is batch:
                self._batch = None
            return tuple(batch)

    def _released(self, key: Hashable) -> bool:
        self._count[key] -= 1
        if self._count[key] > 0:
            return False
        del self._count[key]
        self.states.pop(key, None)
        return True
