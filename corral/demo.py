"""``corral demo --foundation``: a real run of the foundation on loopback, with timings.

It shows what the scheduler, workers and clients stand on: a
``Server`` with a plain, an async and a streaming handler, ``rpc`` calls (sequential
and overlapping), an error travelling back with its own type, a large binary payload, and a
wrong token being refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from corral.core import Server, connect, rpc
from corral.security import Security


def _add(comm: Any, x: int = 0, y: int = 0) -> int:
    return x + y


async def _checksum(comm: Any, data: bytes = b"") -> str:
    return hashlib.sha256(data).hexdigest()


async def _ticks(comm: Any, count: int = 3, interval: float = 0.05) -> None:
    for n in range(1, count + 1):
        await asyncio.sleep(interval)
        await comm.write(n)


async def foundation_demo(calls: int = 2000, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Start an authenticated server on loopback and exercise it; returns the figures."""
    security = Security.generate()
    handlers: dict[str, Callable[..., Any]] = {"add": _add, "checksum": _checksum, "ticks": _ticks}
    async with Server(handlers, security=security, name="demo") as server:
        await server.listen("tcp://127.0.0.1:0")
        echo(f"server listening at {server.address} (token-authenticated)")
        async with rpc(server.address, security=security) as r:
            assert await r.add(x=1, y=2) == 3
            samples = []
            for i in range(calls):
                start = time.perf_counter()
                assert await r.add(x=i, y=1) == i + 1
                samples.append(time.perf_counter() - start)
            median_us = statistics.median(samples) * 1e6
            echo(f"{calls} sequential rpc calls: median round trip {median_us:.0f} µs")

            start = time.perf_counter()
            results = await asyncio.gather(*(r.add(x=i, y=i) for i in range(1000)))
            overlapped = time.perf_counter() - start
            assert results == [2 * i for i in range(1000)]
            echo(f"1000 overlapping calls: {1000 / overlapped:,.0f} calls/s")

            payload = os.urandom(64 * 1024 * 1024)
            start = time.perf_counter()
            digest = await r.checksum(data=payload)
            seconds = time.perf_counter() - start
            assert digest == hashlib.sha256(payload).hexdigest()
            echo(f"64 MiB payload sent and checksummed remotely in {seconds * 1e3:.0f} ms")

            try:
                await r.add(x=1, y="two")
            except TypeError as e:
                echo(f"a remote error comes back as itself: TypeError({e})")

        comm = await connect(server.address, security=security)
        await comm.write({"op": "ticks", "count": 3})
        ticks = [await comm.read() for _ in range(3)]
        await comm.close()
        echo(f"streaming handler sent {ticks} on one comm")

        try:
            await connect(server.address, security=Security.generate(), timeout=2)
        except ConnectionError as e:
            echo(f"a wrong token is refused: {e}")
    return {"median_rtt_us": median_us, "overlapped_calls_per_s": 1000 / overlapped}
