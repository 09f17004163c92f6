"""Refusals cost one log line each, until there are many: then one summary per window.

The policy is tested with a fake clock; the floods are real connections on loopback,
their log lines counted with caplog.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from corral.refusals import RefusalLog
from corral.scheduler import Scheduler
from corral.security import Security
from tests._helpers import assert_serves, raw_peer, serving, wait_until

HANDLERS = {"add": lambda comm, x, y: x + y}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(caplog):
    caplog.set_level(logging.INFO, logger="test.refusals")
    clock = FakeClock()
    log = RefusalLog(logging.getLogger("test.refusals"), "handshakes", window=10, burst=3,
                     clock=clock)
    return log, clock, lambda: [r.getMessage() for r in caplog.records
                                if r.name == "test.refusals"]


def test_the_first_refusals_of_a_window_get_a_line_each_the_rest_a_summary(clocked):
    log, clock, lines = clocked
    for i in range(8):
        log.refuse("backlog full" if i % 4 else "bad magic", "refused peer %d", i)
    assert lines() == ["refused peer 0", "refused peer 1", "refused peer 2"]
    clock.now += 10
    log.refuse("bad magic", "refused peer %d", 8)  # a new window: summary, then its line
    assert lines()[3:] == [
        "refused 8 handshakes in the last 10 s: 6 backlog full, 2 bad magic "
        "(5 not logged one by one)",
        "refused peer 8",
    ]


def test_no_summary_when_every_refusal_had_its_line(clocked):
    log, clock, lines = clocked
    log.refuse("bad magic", "one")
    clock.now += 30
    log.flush()
    log.refuse("bad magic", "two")
    assert lines() == ["one", "two"]


async def test_the_summary_comes_even_when_the_flood_stops(caplog):
    caplog.set_level(logging.INFO, logger="test.refusals")
    log = RefusalLog(logging.getLogger("test.refusals"), "requests", window=0.05, burst=1)
    for _ in range(5):
        log.refuse("garbage", "refused")

    def summary() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refused 5 requests" in r.getMessage()]

    await wait_until(lambda: summary(), what="the summary at the end of the window")
    assert "5 garbage (4 not logged one by one)" in summary()[0]


# -- floods --------------------------------------------------------------------------------------

FLOOD = 600


@pytest.mark.timeout(120)
async def test_a_connection_flood_writes_a_bounded_number_of_lines(caplog):
    caplog.set_level(logging.INFO, logger="corral.core")
    security = Security.generate()
    async with serving(HANDLERS, security=security) as server:
        garbage = b"\x01\x00\x00\x00" + (32).to_bytes(8, "little") + b"not a corral hello!!" * 2
        refused = asyncio.Semaphore(50)

        async def bad_peer() -> None:
            async with refused, raw_peer(server.address) as peer:
                await peer.send_bytes(garbage[:44])
                await peer.closed_by_server(timeout=30)

        await asyncio.gather(*(bad_peer() for _ in range(FLOOD)))
        await wait_until(lambda: not server._comms, timeout=30, what="every peer dealt with")
        await assert_serves(server.address, security, within=10)
    lines = [r for r in caplog.records if r.name == "corral.core"]
    assert len(lines) <= 12, [r.getMessage() for r in lines[:20]]
    assert all(r.exc_info is None for r in lines)
    (summary,) = [r.getMessage() for r in lines if "not logged one by one" in r.getMessage()]
    assert summary.startswith(f"refused {FLOOD} handshakes in the last")
    assert f"{FLOOD} not corral or another version" in summary


@pytest.mark.timeout(120)
async def test_garbage_dashboard_requests_cost_one_line_each_and_no_traceback(caplog):
    caplog.set_level(logging.INFO)
    requests = [b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"]
    async with Scheduler(security=Security.generate(), dashboard_address="127.0.0.1:0") as s:
        await s.listen("tcp://127.0.0.1:0")
        address = f"tcp://127.0.0.1:{s.services['dashboard'].port}"
        for i in range(FLOOD // 2):
            async with raw_peer(address) as peer:
                await peer.send_bytes(requests[i % len(requests)])
                assert (await peer.closed_by_server(timeout=10)).startswith(b"HTTP/1.")
        first = [r for r in caplog.records if r.levelno >= logging.WARNING]
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(first) <= 10, [r.getMessage() for r in first[:20]]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in logged)
    assert first[0].getMessage().startswith("refused a malformed dashboard request: ")
    (summary,) = [r.getMessage() for r in logged if "not logged one by one" in r.getMessage()]
    assert summary.startswith(f"refused {FLOOD // 2} dashboard requests in the last")
    for cause in ("BadHttpMessage", "BadStatusLine", "InvalidURLError"):
        assert cause in summary
