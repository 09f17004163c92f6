"""Shared fixtures: servers on loopback and on the in-process transport, a tiny disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator

import psutil
import pytest

from corral import config
from corral.core import Server


def add(comm, x=None, y=None):
    return x + y


async def slow_add(comm, x=None, y=None, delay=0.01):
    await asyncio.sleep(delay)
    return x + y


async def ticks(comm, interval=0.01):
    n = 0
    while True:
        await asyncio.sleep(interval)
        n += 1
        await comm.write(n)


def echo(comm, data=None):
    return data


HANDLERS = {"add": add, "slow_add": slow_add, "ticks": ticks, "echo": echo}


@pytest.fixture(params=["tcp://127.0.0.1:0", "inproc://"], ids=["tcp", "inproc"])
async def server(request) -> AsyncIterator[Server]:
    """A server with the handlers above, over each transport (tcp: a real socket, not
    the in-process shortcut to it)."""
    async with Server(HANDLERS) as s:
        with config.set({"comm.inproc-shortcut": False}):
            await s.listen(request.param)
        yield s


@pytest.fixture
async def tcp_server() -> AsyncIterator[Server]:
    """A server reached over a real loopback socket."""
    async with Server(HANDLERS) as s:
        with config.set({"comm.inproc-shortcut": False}):
            await s.listen("tcp://127.0.0.1:0")
        yield s


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def _resources() -> tuple[set[int], dict[int, str], dict[int, str]]:
    threads = {t.ident or 0: t.name for t in threading.enumerate()}
    return {p.pid for p in psutil.Process().children()}, threads, _open_fds()


@pytest.fixture
def no_leaks():
    """Fail a test that leaves child processes, threads or file descriptors behind.

    The baseline is taken after wider-scoped fixtures (a shared cluster) are up, so only
    what the test itself started counts; it gets a few seconds to wind down.
    """
    children, threads, fds = _resources()
    yield
    deadline = time.monotonic() + 10
    while True:
        now_children, now_threads, now_fds = _resources()
        leaked = {
            "processes": sorted(now_children - children),
            "threads": sorted(now_threads[t] for t in now_threads.keys() - threads.keys()),
            "fds": sorted(now_fds[fd] for fd in now_fds.keys() - fds.keys())
            if len(now_fds) > len(fds) else [],
        }
        if not any(leaked.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the test leaked {leaked}")
        time.sleep(0.1)


@pytest.fixture(autouse=True, scope="session")
def private_scheduler_file(tmp_path_factory):
    """Schedulers started by tests write their credentials here, not in the user's home."""
    from corral.credentials import SCHEDULER_FILE_ENV

    path = tmp_path_factory.mktemp("corral-home") / "scheduler.json"
    previous = os.environ.get(SCHEDULER_FILE_ENV)
    os.environ[SCHEDULER_FILE_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(SCHEDULER_FILE_ENV, None)
    else:
        os.environ[SCHEDULER_FILE_ENV] = previous


@pytest.fixture(autouse=True, scope="session")
def warm_event_loop_machinery():
    """uvloop opens one pipe per process the first time a loop runs in a thread, and
    keeps it: open it before any ``no_leaks`` baseline so it is not taken for a leak."""
    from corral.utils import LoopRunner

    runner = LoopRunner("warm-up")
    runner.run(asyncio.sleep(0))
    runner.stop()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs, mounted here and removed after; skips where mounting is refused."""
    path = tmp_path / "tiny"
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
