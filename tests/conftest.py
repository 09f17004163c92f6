"""Shared fixtures: servers on loopback and on the in-process transport."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import psutil
import pytest

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


async def wait_for(condition, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` is true, checking at every turn of the event loop."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


HANDLERS = {"add": add, "slow_add": slow_add, "ticks": ticks, "echo": echo}


@pytest.fixture(params=["tcp://127.0.0.1:0", "inproc://"], ids=["tcp", "inproc"])
async def server(request) -> AsyncIterator[Server]:
    """A server with the handlers above, over each transport."""
    async with Server(HANDLERS) as s:
        await s.listen(request.param)
        yield s


@pytest.fixture
async def tcp_server() -> AsyncIterator[Server]:
    async with Server(HANDLERS) as s:
        await s.listen("tcp://127.0.0.1:0")
        yield s


def _resources() -> tuple[set[int], int, int]:
    me = psutil.Process()
    return {p.pid for p in me.children()}, threading.active_count(), me.num_fds()


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
            "threads": now_threads - threads if now_threads > threads else 0,
            "fds": now_fds - fds if now_fds > fds else 0,
        }
        if not any(leaked.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the test leaked {leaked}")
        time.sleep(0.1)
