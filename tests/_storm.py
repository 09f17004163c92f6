"""Malformed traffic against live servers, shared by ``test_abuse_scale`` and ``bench/fuzz.py``.

``live_cluster`` starts a scheduler and one worker as real processes with a token;
``storm`` sends them fuzzed messages from authenticated peers (random ops, arguments of
the wrong types, random msgpack values, extension types nested hundreds deep, lists
nested thousands deep, containers announcing billions of items, random bytes) and
random bytes before any handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from corral import Client, Security
from tests._helpers import RawPeer, wait_until_blocking

OPS = ["register-worker", "register-client", "who_has", "scheduler_info", "get_data",
       "update_data", "run", "broadcast", "identity", "restart", "nope", ""]
ARGUMENTS = ["keys", "x", "data", "msg", "function", "workers"]


@contextlib.contextmanager
def live_cluster(directory: Path) -> Iterator[dict[str, Any]]:
    """A scheduler and a one-thread worker (``corral`` CLI processes) sharing a token."""
    token = secrets.token_hex(32)
    env = dict(os.environ, CORRAL_TOKEN=token)
    scheduler_file = directory / "scheduler.json"
    cli = [sys.executable, "-m", "corral.cli", "--log-level", "error"]
    scheduler = subprocess.Popen([*cli, "scheduler", "--port", "0", "--scheduler-file",
                                  str(scheduler_file)], env=env)
    processes = [scheduler]
    try:
        def written() -> bool:
            assert scheduler.poll() is None, "the scheduler did not start"
            return scheduler_file.exists() and bool(scheduler_file.read_text())

        wait_until_blocking(written, 30, what="the scheduler to write its file")
        worker = subprocess.Popen([*cli, "worker", "--scheduler-file", str(scheduler_file),
                                   "--no-nanny", "--nthreads", "1"], env=env)
        processes.append(worker)
        security = Security(token=token)
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, security=security) as client:
            def registered() -> bool:
                assert worker.poll() is None, "the worker did not start"
                return bool(client.nthreads())

            wait_until_blocking(registered, 60, what="the worker to register")
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


def random_value(rng: random.Random, depth: int = 0) -> Any:
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


def wrapped_ext(depth: int, code: int = 1) -> msgpack.ExtType:
    """An extension type (a tuple by default) wrapped ``depth`` times."""
    ext = msgpack.ExtType(code, msgpack.packb([0]))
    for _ in range(depth - 1):
        ext = msgpack.ExtType(code, msgpack.packb([ext]))
    return ext


def hostile_value(rng: random.Random) -> bytes:
    """One packed msgpack value built to hurt a decoder: deep or (claiming to be) huge."""
    kind = rng.randrange(5)
    if kind == 0:  # extension types nested deep (these once crashed the process)
        return msgpack.packb(wrapped_ext(rng.randrange(20, 600), rng.choice([1, 2, 3])))
    if kind == 1:  # plain lists or maps nested past msgpack's own limit
        depth = rng.randrange(500, 5000)
        return (b"\x91" if rng.random() < 0.5 else b"\x81\x00") * depth + b"\xc0"
    if kind == 2:  # a container announcing billions of items, with a few bytes after
        return rng.choice([b"\xdd", b"\xdf"]) + b"\xff\xff\xff\xff" + rng.randbytes(8)
    if kind == 3:  # a real container of many items
        return msgpack.packb(list(range(rng.randrange(2_000, 20_000))))
    return msgpack.packb({"k": wrapped_ext(40), "n": [[[[wrapped_ext(30)]]]]})


def fuzzed_message(rng: random.Random) -> list[bytes]:
    """A framed message with random contents: mostly op dicts, some hostile, some garbage."""
    choice = rng.random()
    if choice < 0.5:
        body = {"op": rng.choice(OPS), "reply": rng.random() < 0.8}
        body.update({k: random_value(rng) for k in rng.sample(ARGUMENTS, 2)})
        frame0 = msgpack.packb(body)
    elif choice < 0.65:  # a real op with a hostile argument
        op = msgpack.packb(rng.choice(OPS))
        frame0 = b"\x82\xa2op" + op + msgpack.packb(rng.choice(ARGUMENTS)) + hostile_value(rng)
    elif choice < 0.8:
        frame0 = msgpack.packb(random_value(rng))
    else:
        frame0 = rng.randbytes(rng.randrange(1, 200))
    extra = [rng.randbytes(rng.randrange(0, 100)) for _ in range(rng.randrange(0, 3))]
    return [frame0, *extra]


async def authenticated_storm(address: str, token: str, messages: int, seed: int) -> int:
    """Send fuzzed messages; reconnect whenever the server drops us. Returns frames sent."""
    rng = random.Random(seed)
    sent = frames = 0
    while sent < messages:
        peer = await RawPeer.open(address)
        try:
            await peer.authenticate(token)
            for _ in range(500):
                message = fuzzed_message(rng)
                await peer.send(message)
                sent, frames = sent + 1, frames + len(message)
                if sent >= messages:
                    break
            await asyncio.sleep(0)
        except (ConnectionError, asyncio.IncompleteReadError, AssertionError):
            pass  # the server closed a connection that sent garbage: as it should
        finally:
            peer.abort()
    return frames


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


async def storm(cluster: dict[str, Any], messages: int, seed: int = 0) -> int:
    """``messages`` fuzzed messages at the scheduler and the worker (three authenticated
    peers each), plus half as many raw-byte writes before any handshake; frames sent."""
    jobs = []
    for i, target in enumerate([cluster["scheduler"], cluster["worker"]]):
        jobs += [authenticated_storm(target, cluster["token"], messages // 6,
                                     seed=seed + 10 + i * 3 + j) for j in range(3)]
        jobs.append(raw_flood(target, messages // 4, seed=seed + 100 + i))
    return sum(await asyncio.gather(*jobs))
