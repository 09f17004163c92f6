"""The memory thresholds of a worker (see ``corral.worker.memory``), in a module of their
own: the nanny and the command line read them without importing the worker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Fractions of the memory limit; None turns one off."""

    target: float | None = 0.6
    spill: float | None = 0.7
    pause: float | None = 0.8
    terminate: float | None = 0.95

    def __post_init__(self) -> None:
        for name in ("target", "spill", "pause", "terminate"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"memory threshold {name}={value!r}: give a fraction in "
                                 f"(0, 1], or None to turn it off")

    def bytes(self, fraction: float | None, limit: int) -> float:
        """``fraction * limit``; infinity when either is off."""
        return float("inf") if not fraction or not limit else fraction * limit
