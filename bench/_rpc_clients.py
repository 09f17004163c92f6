"""Clients for bench/rpc.py: ``python _rpc_clients.py corral|raw|dask PORT`` → JSON."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import msgpack
from _rpc_servers import HEADER

CALLS = 3000
REPEATS = 5


class RawClient(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer, self.waiter = transport, bytearray(), None

    def data_received(self, data):
        self.buffer += data
        (n,) = HEADER.unpack_from(self.buffer)
        if len(self.buffer) >= HEADER.size + n:
            reply = msgpack.unpackb(bytes(self.buffer[HEADER.size : HEADER.size + n]))
            del self.buffer[: HEADER.size + n]
            self.waiter.set_result(reply)


async def raw_caller(port: int):
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(RawClient, "127.0.0.1", port)

    async def add(x, y):
        proto.waiter = loop.create_future()
        body = msgpack.packb({"op": "add", "x": x, "y": y})
        proto.transport.write(HEADER.pack(len(body)) + body)
        return await proto.waiter

    return add


async def measure(kind: str, port: int) -> dict:
    if kind == "raw":
        callers = [await raw_caller(port) for _ in range(100)]  # one connection per caller
        add = callers[0]
    else:
        if kind == "corral":
            from corral.core import rpc
        else:
            from distributed.core import rpc
        r = rpc(f"tcp://127.0.0.1:{port}")
        add = r.add
        callers = [r.add] * 100
    for _ in range(300):
        assert await add(x=1, y=2) == 3
    latencies = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(CALLS):
            await add(x=1, y=2)
        latencies.append((time.perf_counter() - start) / CALLS * 1e6)
    out = {"rtt_us": statistics.median(latencies)}
    for concurrency in (10, 100):
        rates = []
        for _ in range(REPEATS):
            per = CALLS // concurrency

            async def loop_calls(call, per=per):
                for _ in range(per):
                    await call(x=1, y=2)

            start = time.perf_counter()
            await asyncio.gather(*(loop_calls(callers[i]) for i in range(concurrency)))
            rates.append(per * concurrency / (time.perf_counter() - start))
        out[f"calls_per_s_{concurrency}"] = statistics.median(rates)
    return out


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "dask":
        result = asyncio.run(measure(kind, port))
    else:
        import uvloop

        result = uvloop.run(measure(kind, port))
    print(json.dumps(result))
