"""How many log lines a flood of refused peers costs a ``corral scheduler``.

Starts ``corral scheduler`` (from the tree on ``PYTHONPATH``, or the one given as the
first argument), floods its scheduler port with handshakes that are not corral and its
dashboard with malformed HTTP requests for SECONDS, waits for the summaries, stops it,
and prints one JSON object: refusals sent, stderr lines and bytes, tracebacks.

    python bench/refusal_flood.py [SOURCE_TREE] [SECONDS]
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

BAD_HELLO = b"\x01\x00\x00\x00" + (32).to_bytes(8, "little") + b"not a corral hello!!" * 2
BAD_REQUEST = b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"
PEERS = 4  # concurrent flooders per port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int) -> None:
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)


async def flood(port: int, payload: bytes, until: float) -> int:
    sent = 0
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)  # until the server hangs up
            writer.close()
            sent += 1
        except (OSError, TimeoutError):
            await asyncio.sleep(0.01)
    return sent


async def floods(port: int, dashboard: int, seconds: float) -> dict[str, int]:
    until = time.monotonic() + seconds
    counts = await asyncio.gather(*[flood(port, BAD_HELLO, until) for _ in range(PEERS)],
                                  *[flood(dashboard, BAD_REQUEST, until) for _ in range(PEERS)])
    return {"bad handshakes": sum(counts[:PEERS]), "bad requests": sum(counts[PEERS:])}


def main() -> None:
    tree = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PYTHONPATH", "")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    port, dashboard = free_port(), free_port()
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, PYTHONPATH=tree,
                   CORRAL_SCHEDULER_FILE=os.path.join(home, "scheduler.json"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.cli", "scheduler", "--port", str(port),
             "--dashboard-address", f"127.0.0.1:{dashboard}"],
            env=env, cwd=home, stderr=subprocess.PIPE, text=True)
        wait_listening(port)
        wait_listening(dashboard)
        sent = asyncio.run(floods(port, dashboard, seconds))
        time.sleep(11)  # one window more: the summaries come at its end
        proc.terminate()
        err = proc.communicate(timeout=60)[1]
    print(json.dumps({"tree": tree, "seconds": seconds, **sent,
                      "stderr lines": len(err.splitlines()), "stderr bytes": len(err),
                      "tracebacks": err.count("Traceback")}))


if __name__ == "__main__":
    main()
