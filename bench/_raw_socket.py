"""The physical limit for one-way bandwidth: ``sendall`` / ``recv_into`` between two processes.

The receiver reads into fresh memory of the kind corral's transport gives a new large
frame (``corral.comm.frame_memory``: aligned on huge pages), so both pay the same to touch
fresh memory and the ratio measures only overhead; with ``reuse``, into one buffer
touched before, as corral reads a frame into memory an earlier one left.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import time

from corral.comm.frame_memory import FrameCache


def _fresh_buffer(nbytes: int) -> memoryview:
    return FrameCache(limit=0).frame(nbytes)  # caches nothing: new memory every time


def _receive(ports, nbytes: int, repeats: int, reuse: bool) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    ports.put(server.getsockname()[1])
    kept = _fresh_buffer(nbytes) if reuse else None
    if kept is not None:
        kept[:] = bytes(nbytes)
    for _ in range(repeats):
        conn, _ = server.accept()
        view, got = kept if kept is not None else _fresh_buffer(nbytes), 0
        while got < nbytes:
            got += conn.recv_into(view[got:])
        conn.sendall(b"k")
        conn.close()
        del view


def raw_bandwidth(payload: memoryview, repeats: int, reuse: bool = False,
                  send_buffer: int = 0) -> float:
    """Median bytes/s of sending ``payload`` to another process and hearing it arrived
    (with a send buffer of ``send_buffer`` bytes, as corral sets within a host, or the
    kernel's own)."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    receiver = ctx.Process(target=_receive, args=(ports, payload.nbytes, repeats, reuse))
    receiver.start()
    port = ports.get()
    rates = []
    for _ in range(repeats):
        sock = socket.create_connection(("127.0.0.1", port))
        if send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        start = time.perf_counter()
        sock.sendall(payload)
        sock.recv(1)
        rates.append(payload.nbytes / (time.perf_counter() - start))
        sock.close()
    receiver.join()
    return statistics.median(rates)


def _serve(ports, payload_size: int, repeats: int, send_buffer: int) -> None:
    import numpy as np

    payload = memoryview(np.ones(payload_size, dtype="u1"))
    server = socket.create_server(("127.0.0.1", 0))
    ports.put(server.getsockname()[1])
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if send_buffer:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    for _ in range(repeats):
        if not conn.recv(1):
            break
        conn.sendall(payload)
    conn.close()


def raw_fetch_bandwidth(nbytes: int, repeats: int, pause: float,
                        send_buffer: int = 0) -> float:
    """Median bytes/s of asking another process, over a connection already open, for
    ``nbytes`` it holds and reading them into fresh memory, each request after ``pause``
    seconds of quiet: the shape of a worker's fetch (``_transfer_workload`` pauses as
    long between its rounds), where ``raw_bandwidth`` is a push with both ends awake."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    holder = ctx.Process(target=_serve, args=(ports, nbytes, repeats, send_buffer))
    holder.start()
    sock = socket.create_connection(("127.0.0.1", ports.get()))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rates = []
    for _ in range(repeats):
        time.sleep(pause)
        start = time.perf_counter()
        sock.sendall(b"?")
        view, got = _fresh_buffer(nbytes), 0
        while got < nbytes:
            got += sock.recv_into(view[got:])
        rates.append(nbytes / (time.perf_counter() - start))
        del view
    sock.close()
    holder.join()
    return statistics.median(rates)
