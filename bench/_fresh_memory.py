"""What fresh memory costs on this machine, printed beside a benchmark of large buffers.

A virtual machine may hand memory its guest has freed back to the host (virtio-balloon's
free page reporting, for blocks of 2 MiB and up, a couple of seconds after they are
freed); the guest's next touch of it then waits for the host. On the 2-core VM these
benchmarks run on, writing 2 GB freed a moment before ran at 6 GB/s, and freed 5 s
before at 0.3 GB/s. Any buffer a benchmark allocates afresh (a receiver's frame, a new
array) may land on such pages, so a round can take several times as long as the next,
for every system measured. corral reads frames into memory it keeps
(``corral.comm.frame_memory``), which is one reason it is steadier than the raw socket.
"""

from __future__ import annotations

import time

import numpy as np

PROBE_BYTES = 2**30
SETTLE_SECONDS = 5.0  # longer than the reporting delay (2 s in Linux)


def _touch(nbytes: int) -> float:
    start = time.perf_counter()
    block = np.ones(nbytes, dtype="u1")  # writes every page
    elapsed = time.perf_counter() - start
    del block
    return nbytes / elapsed


def fresh_memory_rates(nbytes: int = PROBE_BYTES) -> tuple[float, float]:
    """Bytes/s of writing ``nbytes`` of new memory freed a moment ago, and freed
    ``SETTLE_SECONDS`` ago."""
    _touch(nbytes)
    at_once = _touch(nbytes)
    time.sleep(SETTLE_SECONDS)
    return at_once, _touch(nbytes)


def fresh_memory_line() -> str:
    at_once, settled = fresh_memory_rates()
    verdict = ("this machine hands freed memory back to its host: rounds that land on "
               "such pages are slow, for every system" if settled < at_once / 3 else
               "no penalty for memory left free")
    return (f"fresh memory: {at_once / 1e9:.2f} GB/s freed a moment ago, "
            f"{settled / 1e9:.2f} GB/s freed {SETTLE_SECONDS:g} s ago: {verdict}")


if __name__ == "__main__":
    print(fresh_memory_line())
