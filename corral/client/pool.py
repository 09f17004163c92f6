"""The seed's ``Pool(center)``: ``map``/``apply`` returning results with ``.get()``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from corral.client.future import Future
from corral.client.sync import Client
from corral.security import Security


class PoolResult:
    """A pending result: ``get()`` waits for it."""

    __slots__ = ("future",)

    def __init__(self, future: Future) -> None:
        self.future = future

    def get(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout)

    def ready(self) -> bool:
        return self.future.done()

    def __repr__(self) -> str:
        return f"<PoolResult {self.future.status}>"


class Pool:
    def __init__(self, center: str, *, security: Security | None = None) -> None:
        self.client = Client(center, security=security, set_as_default=False)

    def map(self, fn: Callable[..., Any], seq: Iterable[Any]) -> list[PoolResult]:
        return [PoolResult(f) for f in self.client.map(fn, seq, pure=False)]

    def apply(
        self, fn: Callable[..., Any], args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> PoolResult:
        return PoolResult(self.client.submit(fn, *args, pure=False, **(kwargs or {})))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
