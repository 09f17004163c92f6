"""A real network partition: scheduler and workers in separate network namespaces.

Topology (all created and removed by the test; nothing touches the host's own network):

    worker a  10.231.1.2 ──veth── 10.231.1.1 ┐
                                             scheduler + client (routes between a and b)
    worker b  10.231.2.2 ──veth── 10.231.2.1 ┘

Mid-computation the test sets worker a's interface down — a pulled cable: no FIN, no
RST, packets just vanish. The scheduler must notice by missed heartbeats, recompute what
was lost and return the exact result; once the link is back, worker a must rejoin.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.security import TOKEN_ENV, new_token

DRIVER = Path(__file__).with_name("_partition_driver.py")
WORKER_TTL = 3.0
SCHEDULER_PORT = 8786
PREFIX = f"crl{os.getpid() % 100000}"


def ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(command, check=True, capture_output=True, timeout=10)


def namespaces_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"{PREFIX}probe"
    try:
        ip("netns", "add", probe)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace here: {getattr(e, 'stderr', b'').decode()}"
    ip("netns", "del", probe)
    return None


UNAVAILABLE = namespaces_unavailable() if sys.platform == "linux" else "namespaces are Linux-only"
pytestmark = [pytest.mark.skipif(bool(UNAVAILABLE), reason=UNAVAILABLE or ""),
              pytest.mark.usefixtures("no_leaks")]


@contextlib.contextmanager
def network() -> Iterator[dict[str, str]]:
    """Three namespaces joined by two veth pairs through the scheduler's namespace."""
    names = {role: f"{PREFIX}{role}" for role in ("s", "a", "b")}
    try:
        for name in names.values():
            ip("netns", "add", name)
            ip("link", "set", "lo", "up", netns=name)
        for subnet, role in ((1, "a"), (2, "b")):
            inside, outside = f"{PREFIX}{role}0", f"{PREFIX}{role}1"
            ip("link", "add", inside, "netns", names[role], "type", "veth",
               "peer", "name", outside, "netns", names["s"])
            ip("addr", "add", f"10.231.{subnet}.2/24", "dev", inside, netns=names[role])
            ip("addr", "add", f"10.231.{subnet}.1/24", "dev", outside, netns=names["s"])
            ip("link", "set", inside, "up", netns=names[role])
            ip("link", "set", outside, "up", netns=names["s"])
            ip("route", "add", "default", "via", f"10.231.{subnet}.1", netns=names[role])
        subprocess.run(["ip", "netns", "exec", names["s"], "sysctl", "-qw",
                        "net.ipv4.ip_forward=1"], check=True, timeout=10)
        yield names
    finally:
        for name in names.values():  # removes the veth pairs with them
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


class Processes:
    """Processes started inside namespaces; all terminated (then killed) on exit."""

    def __init__(self, token: str) -> None:
        self.env = {**os.environ, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"}
        self.started: list[subprocess.Popen] = []

    def start(self, netns: str, *args: str, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, *args],
                                env=self.env, **kwargs)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


class Events:
    """The driver's JSON lines, read on a thread so the test can wait with a timeout."""

    def __init__(self, stream) -> None:
        self._queue: queue.Queue[dict] = queue.Queue()
        self._unclaimed: list[dict] = []  # arrived while the test waited for another kind
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            if line.startswith("{"):
                self._queue.put(json.loads(line))
        self._queue.put({"event": "eof", "t": time.time()})

    def next(self, kind: str, timeout: float) -> dict:
        """The earliest unclaimed event of ``kind``, waiting for it if need be."""
        for event in self._unclaimed:
            if event["event"] == kind:
                self._unclaimed.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            if event["event"] == kind:
                return event
            if event["event"] == "eof":
                raise AssertionError(f"driver exited before {kind!r}; saw {self._unclaimed}")
            self._unclaimed.append(event)


@pytest.mark.timeout(240)
def test_worker_behind_a_downed_link_is_declared_dead_and_rejoins():
    token = new_token()
    worker_a = "tcp://10.231.1.2:9000"
    with network() as ns:
        procs = Processes(token)
        try:
            procs.start(ns["s"], "-m", "corral.cli", "--log-level", "warning", "scheduler",
                        "--host", "0.0.0.0", "--port", str(SCHEDULER_PORT),
                        "--worker-ttl", str(WORKER_TTL))
            for role, subnet in (("a", 1), ("b", 2)):
                procs.start(ns[role], "-m", "corral.cli", "--log-level", "warning", "worker",
                            f"tcp://10.231.{subnet}.1:{SCHEDULER_PORT}", "--nthreads", "1",
                            "--host", f"10.231.{subnet}.2", "--port", "9000", "--name", role)
            driver = procs.start(ns["s"], str(DRIVER), f"tcp://127.0.0.1:{SCHEDULER_PORT}",
                                 token, stdout=subprocess.PIPE, text=True)
            events = Events(driver.stdout)
            assert worker_a in events.next("ready", timeout=60)["workers"]
            running = events.next("running", timeout=60)
            assert running["done"] < running["of"]

            cut = time.time()
            ip("link", "set", f"{PREFIX}a0", "down", netns=ns["a"])
            while worker_a in (membership := events.next("workers", timeout=30))["addresses"]:
                pass
            detection = membership["t"] - cut
            result = events.next("result", timeout=120)
            assert result["value"] == result["expected"]

            restored = time.time()
            ip("link", "set", f"{PREFIX}a0", "up", netns=ns["a"])
            rejoined = events.next("rejoined", timeout=120)
            assert worker_a in rejoined["workers"]
            assert events.next("check", timeout=60)["ok"]
            assert driver.wait(timeout=30) == 0
        finally:
            procs.stop_all()
    # A heartbeat is due every second; the scheduler checks every 0.1 s.
    assert detection < WORKER_TTL + 2.0, f"dead link noticed after {detection:.1f}s"
    print(f"\npartition: detected after {detection:.2f}s (ttl {WORKER_TTL}s), result exact, "
          f"rejoined {rejoined['t'] - restored:.2f}s after the link came back")
