"""Abuse at scale against a live scheduler and worker (real processes, with a token).

100 000 fuzzed frames go in: random-byte floods from several sockets at once before
any handshake, and, from authenticated peers, framed messages whose contents are random
(random ops and arguments, random msgpack values, random bytes). Neither process may
crash or balloon, and an honest client must compute correctly right afterwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys

import msgpack
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import Client, Security
from tests._helpers import RawPeer

pytestmark = pytest.mark.usefixtures("no_leaks")

TOTAL_FRAMES = 100_000
RSS_CEILING = 400 * 2**20  # each process, after the storm
OPS = ["register-worker", "register-client", "who_has", "scheduler_info", "get_data",
       "update_data", "run", "broadcast", "identity", "restart", "nope", ""]


def inc(x):
    return x + 1


@pytest.fixture(scope="module")
def live_cluster(tmp_path_factory):
    token = secrets.token_hex(32)
    env = dict(os.environ, CORRAL_TOKEN=token)
    scheduler_file = tmp_path_factory.mktemp("abuse") / "scheduler.json"
    cli = [sys.executable, "-m", "corral.cli", "--log-level", "error"]
    scheduler = subprocess.Popen([*cli, "scheduler", "--port", "0", "--scheduler-file",
                                  str(scheduler_file)], env=env)
    processes = [scheduler]
    try:
        for _ in range(200):
            if scheduler_file.exists() and scheduler_file.read_text():
                break
            assert scheduler.poll() is None
            subprocess.run(["sleep", "0.05"], check=True)
        worker = subprocess.Popen([*cli, "worker", "--scheduler-file", str(scheduler_file),
                                   "--no-nanny", "--nthreads", "1"], env=env)
        processes.append(worker)
        security = Security(token=token)
        import json

        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, security=security) as client:
            for _ in range(200):
                if client.nthreads():
                    break
                subprocess.run(["sleep", "0.05"], check=True)
            (worker_address,) = client.nthreads()
        yield {"token": token, "security": security, "scheduler": address,
               "worker": worker_address, "processes": processes}
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.randrange(-2**63, 2**63)
    if kind == 1:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 16)))
    if kind == 3:
        return rng.choice([None, True, False, 1.5, float("nan")])
    if kind == 4:
        return rng.choice(OPS)
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if kind == 6:
        return {rng.choice(["keys", "op", "x", "data", "function", "msg", "workers"]):
                random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}
    return msgpack.ExtType(rng.randrange(0, 128), rng.randbytes(rng.randrange(0, 32)))


def fuzzed_message(rng: random.Random) -> list[bytes]:
    """A framed message with random contents: mostly op dicts, some pure garbage."""
    choice = rng.random()
    if choice < 0.6:
        body = {"op": rng.choice(OPS), "reply": rng.random() < 0.8}
        body.update({k: random_value(rng) for k in rng.sample(["keys", "x", "data", "msg",
                                                                 "function", "workers"], 2)})
        frame0 = msgpack.packb(body)
    elif choice < 0.8:
        frame0 = msgpack.packb(random_value(rng))
    else:
        frame0 = rng.randbytes(rng.randrange(1, 200))
    extra = [rng.randbytes(rng.randrange(0, 100)) for _ in range(rng.randrange(0, 3))]
    return [frame0, *extra]


async def authenticated_storm(address: str, token: str, frames: int, seed: int) -> int:
    """Send fuzzed messages; reconnect whenever the server drops us. Returns frames sent."""
    rng = random.Random(seed)
    sent = 0
    while sent < frames:
        peer = await RawPeer.open(address)
        try:
            await peer.authenticate(token)
            for _ in range(500):
                message = fuzzed_message(rng)
                await peer.send(message)
                sent += len(message)
                if sent >= frames:
                    break
            await asyncio.sleep(0)
        except (ConnectionError, asyncio.IncompleteReadError, AssertionError):
            pass  # the server closed a connection that sent garbage: as it should
        finally:
            peer.abort()
    return sent


async def raw_flood(address: str, frames: int, seed: int) -> int:
    """Random bytes (some shaped like headers with absurd counts) before any handshake."""
    rng = random.Random(seed)
    sent = 0
    while sent < frames:
        peer = await RawPeer.open(address)
        try:
            for _ in range(50):
                if rng.random() < 0.5:
                    await peer.send_bytes(rng.randbytes(rng.randrange(1, 4096)))
                else:
                    lengths = [rng.randrange(0, 2**40) for _ in range(rng.randrange(1, 8))]
                    await peer.send_bytes(len(lengths).to_bytes(4, "little")
                                          + b"".join(n.to_bytes(8, "little") for n in lengths))
                sent += 1
        except ConnectionError:
            pass
        finally:
            peer.abort()
    return sent


@pytest.mark.timeout(300)
def test_hundred_thousand_fuzzed_frames_then_an_honest_client(live_cluster):
    targets = [live_cluster["scheduler"], live_cluster["worker"]]
    token = live_cluster["token"]

    async def storm() -> int:
        share = TOTAL_FRAMES // 8
        jobs = []
        for i, target in enumerate(targets):
            jobs += [authenticated_storm(target, token, share, seed=10 + i * 3 + j)
                     for j in range(3)]
            jobs.append(raw_flood(target, share, seed=100 + i))
        return sum(await asyncio.gather(*jobs))

    sent = asyncio.run(storm())
    assert sent >= TOTAL_FRAMES
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
