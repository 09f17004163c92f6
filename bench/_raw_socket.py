"""The physical limit for one-way bandwidth: ``sendall`` / ``recv_into`` between two processes.

The receiver reads into memory advised to use huge pages, as corral's transport does,
so both sides pay the same to touch fresh memory and the ratio measures only overhead.
"""

from __future__ import annotations

import mmap
import multiprocessing
import socket
import statistics
import time


def _fresh_buffer(nbytes: int) -> memoryview:
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return memoryview(buffer)


def _receive(ports, nbytes: int, repeats: int) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    ports.put(server.getsockname()[1])
    for _ in range(repeats):
        conn, _ = server.accept()
        view, got = _fresh_buffer(nbytes), 0
        while got < nbytes:
            got += conn.recv_into(view[got:])
        conn.sendall(b"k")
        conn.close()
        view.release()


def raw_bandwidth(payload: memoryview, repeats: int) -> float:
    """Median bytes/s of sending ``payload`` to another process and hearing it arrived."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    receiver = ctx.Process(target=_receive, args=(ports, payload.nbytes, repeats))
    receiver.start()
    port = ports.get()
    rates = []
    for _ in range(repeats):
        sock = socket.create_connection(("127.0.0.1", port))
        start = time.perf_counter()
        sock.sendall(payload)
        sock.recv(1)
        rates.append(payload.nbytes / (time.perf_counter() - start))
        sock.close()
    receiver.join()
    return statistics.median(rates)
