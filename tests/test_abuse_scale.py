"""Abuse at scale against a live scheduler and worker (real processes, with a token).

30 000 fuzzed messages go in from authenticated peers — random ops and arguments of
the wrong types, random msgpack values, extension types nested hundreds deep, lists
nested thousands deep, containers announcing billions of items, random bytes — with
15 000 random-byte writes before any handshake from several sockets at once. Neither
process may crash or balloon, and an honest client must compute correctly right
afterwards. ``bench/fuzz.py`` runs the same storm at full size.
"""

from __future__ import annotations

import asyncio

import msgpack
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import Client
from tests import _storm
from tests._helpers import RawPeer
from tests._storm import OPS, wrapped_ext

pytestmark = pytest.mark.usefixtures("no_leaks")

MESSAGES = 30_000
RSS_CEILING = 400 * 2**20  # each process, after the storm


def inc(x):
    return x + 1


@pytest.fixture(scope="module")
def live_cluster(tmp_path_factory):
    with _storm.live_cluster(tmp_path_factory.mktemp("abuse")) as cluster:
        yield cluster


@pytest.mark.timeout(300)
def test_thirty_thousand_fuzzed_messages_then_an_honest_client(live_cluster):
    sent = asyncio.run(_storm.storm(live_cluster, MESSAGES))
    assert sent >= MESSAGES
    for p in live_cluster["processes"]:
        assert p.poll() is None, "a server died of a peer's garbage"
        rss = psutil.Process(p.pid).memory_info().rss
        assert rss < RSS_CEILING, f"pid {p.pid} grew to {rss} bytes"
    with Client(live_cluster["scheduler"], security=live_cluster["security"]) as client:
        assert client.gather(client.map(inc, range(100))) == list(range(1, 101))


SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.binary(max_size=20) | st.text(max_size=20))
ARGUMENTS = st.dictionaries(st.sampled_from(["keys", "x", "data", "msg", "reply"]),
                            st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3),
                                         max_leaves=8))
OP_MESSAGES = st.builds(lambda op, args: [msgpack.packb({"op": op, **args})],
                        st.sampled_from(OPS), ARGUMENTS)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=st.lists(st.binary(max_size=300), min_size=1, max_size=4) | OP_MESSAGES)
def test_hypothesis_messages_to_an_authenticated_worker(live_cluster, message):
    async def send() -> None:
        peer = await RawPeer.open(live_cluster["worker"])
        try:
            await peer.authenticate(live_cluster["token"])
            await peer.send(message)
        finally:
            peer.abort()

    asyncio.run(send())
    assert live_cluster["processes"][1].poll() is None


@pytest.mark.parametrize("target", ["scheduler", "worker"])
def test_deeply_nested_message_is_answered_with_an_error(live_cluster, target):
    address = live_cluster[target]

    async def exchange() -> tuple[list[bytes], list[bytes]]:
        peer = await RawPeer.open(address)
        try:
            await peer.authenticate(live_cluster["token"])
            await peer.send([msgpack.packb({"op": "identity", "x": wrapped_ext(400)})])
            error = await peer.read_message()
            await peer.send([msgpack.packb({"op": "identity"})])
            return error, await peer.read_message()
        finally:
            peer.abort()

    error, honest = asyncio.run(exchange())
    assert b"levels deep" in b"".join(error)
    assert msgpack.unpackb(honest[0])["address"] == address
    assert live_cluster["processes"][0 if target == "scheduler" else 1].poll() is None
