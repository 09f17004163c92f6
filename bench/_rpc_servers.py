"""Servers for bench/rpc.py, each run in a process of its own.

``python _rpc_servers.py corral|raw|dask`` prints its port, then serves until killed.
The raw server is the physical limit: length-prefixed msgpack on asyncio Protocols.
"""

from __future__ import annotations

import asyncio
import struct
import sys

import msgpack

HEADER = struct.Struct("<I")


class RawEcho(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, bytearray()

    def data_received(self, data):
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            (n,) = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < HEADER.size + n:
                return
            msg = msgpack.unpackb(bytes(self.buffer[HEADER.size : HEADER.size + n]))
            del self.buffer[: HEADER.size + n]
            reply = msgpack.packb(msg["x"] + msg["y"])
            self.transport.write(HEADER.pack(len(reply)) + reply)


async def serve(kind: str) -> None:
    if kind == "raw":
        server = await asyncio.get_running_loop().create_server(RawEcho, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    elif kind == "corral":
        from corral.core import Server

        server = Server({"add": lambda comm, x, y: x + y, "sink": lambda comm, data: len(data)})
        await server.listen("tcp://127.0.0.1:0")
        port = server.port
    else:
        from distributed.core import Server

        server = Server({"add": lambda x, y: x + y})
        await server.listen("tcp://127.0.0.1:0")
        port = int(server.address.rsplit(":", 1)[1])
    print(port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "dask":
        asyncio.run(serve(kind))
    else:
        import uvloop

        uvloop.run(serve(kind))
