"""Shared fixtures: servers on loopback and on the in-process transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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
