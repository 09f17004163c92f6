"""Security end to end: tokens by default, TLS with mutual authentication, clear refusals.

Clusters here are real: CLI processes or ``LocalCluster`` with nanny-supervised worker
processes, over loopback TCP and TLS. (The handshake's own attacks and the token's
secrecy on the wire are in ``test_auth.py``.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from corral import Client, LocalCluster
from corral.certs import generate
from corral.core import connect, rpc
from corral.credentials import read_scheduler_file
from corral.exceptions import AuthenticationError, HandshakeError, TLSError
from corral.security import Security
from tests._helpers import raw_peer, wait_until_blocking
from tests.test_auth import ATTACKS, encodings_of, evil_frames

pytestmark = pytest.mark.usefixtures("no_leaks")


def double(x):
    return 2 * x


def corral_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "corral.cli", *args], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=env,
    )


def stop(*procs: subprocess.Popen) -> list[str]:
    """SIGTERM, wait, and return what each printed."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=20)[0])
        except subprocess.TimeoutExpired:
            proc.kill()
            outputs.append(proc.communicate()[0])
    return outputs


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    def written() -> bool:
        assert proc.poll() is None, proc.communicate()[0]
        return path.exists() and bool(path.read_text())

    wait_until_blocking(written, timeout, what=f"{path} to be written")


def wait_for_workers(client: Client, n: int, timeout: float = 30) -> None:
    wait_until_blocking(lambda: len(client.nthreads()) >= n, timeout, what=f"{n} workers")


# -- tokens -----------------------------------------------------------------------------------


def test_cli_scheduler_makes_a_token_and_only_its_holders_get_in(tmp_path, free_port):
    shared = tmp_path / "shared.json"
    sched = corral_cli("scheduler", "--port", str(free_port), "--scheduler-file", str(shared))
    worker = None
    try:
        wait_for_file(shared, sched)
        address, security = read_scheduler_file(shared)
        assert security is not None
        assert len(security.token) >= 40
        assert oct(shared.stat().st_mode & 0o777) == "0o600"
        # The worker finds address and token in the file; nothing on its command line.
        worker = corral_cli("worker", "--scheduler-file", str(shared), "--nthreads", "1")
        with Client(scheduler_file=str(shared)) as client:
            wait_for_workers(client, 1)
            assert client.submit(double, 21).result(timeout=30) == 42
        with pytest.raises(AuthenticationError, match="different token"):
            Client(address, security=Security.generate(), timeout=5)
        with pytest.raises(AuthenticationError, match="requires a token"):
            Client(address, security=Security(), timeout=5)
    finally:
        log = stop(*([worker] if worker else []), sched)[-1]
    assert security.token not in log
    assert "authentication failed" in log  # one line per refusal, naming why


@pytest.mark.parametrize("nanny", [True, False], ids=["nanny", "no-nanny"])
@pytest.mark.timeout(90)
def test_worker_without_the_token_says_why_in_one_line(tmp_path, free_port, nanny):
    shared = tmp_path / "shared.json"
    sched = corral_cli("scheduler", "--port", str(free_port), "--dashboard-address", "none",
                       "--scheduler-file", str(shared))
    try:
        wait_for_file(shared, sched)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_TOKEN")}
        env["CORRAL_SCHEDULER_FILE"] = str(tmp_path / "no-such-file.json")
        worker = subprocess.run(
            [sys.executable, "-m", "corral.cli", "worker", f"tcp://127.0.0.1:{free_port}",
             *([] if nanny else ["--no-nanny"])],
            capture_output=True, text=True, env=env, timeout=60,
        )
    finally:
        stop(sched)
    assert worker.returncode != 0
    (line,) = worker.stderr.splitlines()  # no traceback, no log before it
    assert "requires a token" in line
    for way in ("CORRAL_TOKEN", "--scheduler-file", "--token"):
        assert way in line


def test_no_auth_is_possible_and_loud(free_port, tmp_path):
    shared = tmp_path / "open.json"
    sched = corral_cli("scheduler", "--port", str(free_port), "--no-auth",
                       "--scheduler-file", str(shared))
    try:
        wait_for_file(shared, sched)
        address, security = read_scheduler_file(shared)
        assert security is None
        with Client(address, security=Security()) as client:
            assert client.scheduler_info()["workers"] == {}
    finally:
        (log,) = stop(sched)
    assert "AUTHENTICATION IS OFF" in log


def test_local_cluster_is_authenticated_without_the_user_seeing_a_token():
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster:
        assert cluster.security.token
        with Client(cluster.scheduler_address) as client:  # found in this process, by address
            assert client.submit(double, 4).result(timeout=30) == 8
        with pytest.raises(AuthenticationError):
            Client(cluster.scheduler_address, security=Security.generate(), timeout=5)

        async def anonymous():
            async with rpc(cluster.scheduler_address, timeout=5, security=Security()) as r:
                await r.identity()

        with pytest.raises(AuthenticationError, match="requires a token"):
            asyncio.run(anonymous())


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, security=Security.temporary()) as c:
        yield c


def test_full_computation_over_mutual_tls(tls_cluster):
    assert tls_cluster.scheduler_address.startswith("tls://")
    with Client(tls_cluster) as client:
        wait_for_workers(client, 2)
        assert all(a.startswith("tls://") for a in client.nthreads())
        xs = client.map(double, range(50))
        total = client.submit(sum, xs)
        assert total.result(timeout=30) == 2 * sum(range(50))


def log_lines(caplog, logger: str, expected: int = 1, timeout: float = 5.0) -> list[str]:
    """The messages ``logger`` logged, once there are ``expected`` of them (the server may
    finish logging a refusal a moment after the client has raised)."""
    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == logger]

    wait_until_blocking(lambda: len(lines()) >= expected, timeout,
                        what=lambda: f"{expected} lines from {logger}: {lines()}")
    return lines()


def _refusal(address: str, security: Security) -> Exception:
    async def attempt():
        comm = await connect(address, timeout=5, security=security)
        comm.abort()

    started = time.monotonic()
    with pytest.raises(HandshakeError) as info:
        asyncio.run(attempt())
    assert time.monotonic() - started < 5, "refusal took too long"
    return info.value


def test_tls_refuses_a_client_without_a_certificate(tls_cluster, caplog):
    s = tls_cluster.security
    with caplog.at_level(logging.WARNING, logger="corral.comm"):
        error = _refusal(tls_cluster.scheduler_address,
                         Security(token=s.token, tls_ca_file=s.tls_ca_file))
    assert isinstance(error, TLSError)
    (line,) = log_lines(caplog, "corral.comm")
    assert "sent no client certificate" in line
    assert "did not accept our client certificate" in str(error)


def test_tls_refuses_a_certificate_from_another_ca(tls_cluster, tmp_path, caplog):
    other = generate(tmp_path)["node"]
    intruder = Security(token=tls_cluster.security.token, tls_ca_file=str(other.ca_file),
                        tls_cert=str(other.cert), tls_key=str(other.key))
    with caplog.at_level(logging.WARNING, logger="corral.comm"):
        error = _refusal(tls_cluster.scheduler_address, intruder)
    assert isinstance(error, TLSError)
    assert "failed our checks" in str(error)  # we do not trust the server's CA either
    (line,) = log_lines(caplog, "corral.comm")
    assert line.startswith("refused: TLS with peer")


def test_tls_refuses_plaintext_clients_with_words(tls_cluster, caplog):
    plaintext = tls_cluster.scheduler_address.replace("tls://", "tcp://")
    with caplog.at_level(logging.WARNING, logger="corral.core"):
        error = _refusal(plaintext, Security(token=tls_cluster.security.token))
    assert "only accepts TLS" in str(error)
    (line,) = log_lines(caplog, "corral.core")
    assert "only accepts TLS" in line


def test_tls_client_to_a_plaintext_port_is_told_why(tls_cluster, caplog):
    with LocalCluster(n_workers=0) as plain, caplog.at_level(logging.WARNING):
        tls_address = plain.scheduler_address.replace("tcp://", "tls://")
        error = _refusal(tls_address, tls_cluster.security)
    assert isinstance(error, TLSError)
    assert "does not speak TLS" in str(error) or "plaintext tcp://" in str(error)
    (line,) = log_lines(caplog, "corral.core")
    assert "TLS handshake on a plaintext" in line


def test_cli_tls_generate_then_scheduler_worker_client(tmp_path, free_port):
    certs = tmp_path / "certs"
    made = subprocess.run([sys.executable, "-m", "corral.cli", "tls", "generate", str(certs)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert oct((certs / "node-key.pem").stat().st_mode & 0o777) == "0o600"
    flags = ["--tls-ca-file", str(certs / "ca.pem"), "--tls-cert", str(certs / "node.pem"),
             "--tls-key", str(certs / "node-key.pem")]
    shared = tmp_path / "shared.json"
    sched = corral_cli("scheduler", "--port", str(free_port), "--scheduler-file", str(shared),
                       *flags)
    worker = None
    try:
        wait_for_file(shared, sched)
        record = json.loads(shared.read_text())
        assert record["address"].startswith("tls://")
        assert record["token"]  # TLS and a token: they combine
        worker = corral_cli("worker", "--scheduler-file", str(shared), "--nthreads", "1")
        with Client(scheduler_file=str(shared)) as client:
            wait_for_workers(client, 1)
            assert client.submit(double, 5).result(timeout=30) == 10
    finally:
        stop(*([worker] if worker else []), sched)


# -- every port of a running cluster ----------------------------------------------------------


def cluster_ports(cluster: LocalCluster) -> dict[int, int]:
    """``{port: pid}`` of every TCP port the cluster listens on: its scheduler (here, in
    this process) and every process of its workers (nannies and worker processes)."""
    ports = {int(cluster.scheduler_address.rsplit(":", 1)[1]): os.getpid()}
    for handle in cluster.workers.values():
        nanny = psutil.Process(handle.pid)
        for proc in [nanny, *nanny.children(recursive=True)]:
            try:
                for conn in proc.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN:
                        ports[conn.laddr.port] = proc.pid
            except psutil.NoSuchProcess:
                continue
    return ports


@pytest.mark.timeout(120)
def test_no_port_of_a_running_cluster_loads_a_pickle_or_leaks_the_token(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        wait_for_workers(client, 2)
        ports = cluster_ports(cluster)
        assert len(ports) >= 5, ports  # the scheduler, two nannies and two workers
        dashboard = cluster.dashboard.port
        token = cluster.security.token
        heard = bytearray()

        async def scan():
            for port in ports:
                for attack in ATTACKS:
                    async with raw_peer(f"tcp://127.0.0.1:{port}") as peer:
                        path = tmp_path / f"pwned-{port}-{attack.__name__}"
                        await attack(peer, path, token)
                        heard.extend(await peer.closed_by_server(timeout=5))
            # The dashboard speaks HTTP: the pickle as raw frames, and as a request body.
            for i, path in enumerate(["/", "/api/tasks", "/metrics", "/ws", "/login"]):
                async with raw_peer(f"tcp://127.0.0.1:{dashboard}") as peer:
                    body = b"".join(evil_frames(tmp_path / f"pwned-http-{i}"))
                    await peer.send_bytes(
                        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                    heard.extend(await peer.closed_by_server(timeout=5))
                async with raw_peer(f"tcp://127.0.0.1:{dashboard}") as peer:
                    await peer.send_bytes(b"".join(evil_frames(tmp_path / f"pwned-raw-{i}")))
                    heard.extend(await peer.closed_by_server(timeout=5))

        asyncio.run(scan())
        assert not list(tmp_path.glob("pwned-*")), "a pickle from an unauthenticated peer ran"
        assert heard, "the scan heard nothing back: it did not reach the servers"
        for encoded in encodings_of(token):
            assert encoded not in heard
        assert client.submit(double, 6).result(timeout=30) == 12  # all still serve
        assert all(psutil.pid_exists(pid) for pid in ports.values())


@pytest.fixture
def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_scheduler_file_is_private(private_scheduler_file, free_port):
    sched = corral_cli("scheduler", "--port", str(free_port))
    try:
        def written() -> bool:
            assert sched.poll() is None
            return private_scheduler_file.exists() and json.loads(
                private_scheduler_file.read_text() or "{}"
            ).get("address", "").endswith(f":{free_port}")

        wait_until_blocking(written, 30, what="the default scheduler file")
        assert oct(private_scheduler_file.stat().st_mode & 0o777) == "0o600"
        # A worker on this machine needs nothing but the command the log shows.
        worker = corral_cli("worker", "--nthreads", "1")
        try:
            with Client(f"tcp://127.0.0.1:{free_port}") as client:  # token from the file
                wait_for_workers(client, 1)
        finally:
            stop(worker)
    finally:
        stop(sched)
    assert os.environ["CORRAL_SCHEDULER_FILE"] == str(private_scheduler_file)


# -- credentials, without a cluster -------------------------------------------------------


def test_resolve_takes_the_first_source_that_has_credentials(tmp_path, monkeypatch):
    from corral.credentials import forget, remember, resolve, write_scheduler_file

    for name in ("CORRAL_TOKEN", "CORRAL_TOKEN_FILE", "CORRAL_TLS_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    address = "tcp://127.0.0.1:9999"
    filed, env, local, given = (Security.generate() for _ in range(4))
    default = tmp_path / "default.json"
    monkeypatch.setenv("CORRAL_SCHEDULER_FILE", str(default))
    assert resolve(address) == (address, None)
    write_scheduler_file(default, "127.0.0.1:9999", filed)  # same address, other spelling
    assert resolve(address)[1] == filed
    assert resolve("tcp://127.0.0.1:1")[1] is None  # the file names another scheduler
    monkeypatch.setenv("CORRAL_TOKEN", env.token)
    assert resolve(address)[1].token == env.token
    remember(address, local)
    try:
        assert resolve(address)[1] == local
        assert resolve(address, given)[1] == given
    finally:
        forget(address)
    assert resolve(None, scheduler_file=default) == ("127.0.0.1:9999", filed)


def test_scheduler_file_round_trip_is_private(tmp_path):
    from corral.credentials import read_scheduler_file, write_scheduler_file

    security = Security.temporary()
    path = write_scheduler_file(tmp_path / "deep" / "s.json", "tls://10.0.0.1:8786", security)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert read_scheduler_file(path) == ("tls://10.0.0.1:8786", security)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a corral scheduler file"):
        read_scheduler_file(tmp_path / "bad.json")


def test_security_checks_its_fields_and_travels_by_environment(tmp_path, monkeypatch):
    from corral.security import from_environment

    files = generate(tmp_path)["node"]
    with pytest.raises(ValueError, match="together"):
        Security(tls_ca_file=str(files.ca_file), tls_cert=str(files.cert))
    with pytest.raises(ValueError, match="tls_ca_file"):
        Security(tls_cert=str(files.cert), tls_key=str(files.key))
    with pytest.raises(FileNotFoundError, match=r"nope\.pem"):
        Security(tls_ca_file=str(tmp_path / "nope.pem"))
    security = Security(token="t0ken", tls_ca_file=str(files.ca_file), tls_cert=str(files.cert),
                        tls_key=str(files.key), tls_check_hostname=True)
    for name, value in security.environment().items():
        monkeypatch.setenv(name, value)
    assert from_environment() == security
    assert "t0ken" not in repr(security)


def test_dashboard_hook_admits_only_the_token():
    security = Security.generate()
    assert security.authorize_http(security.token)
    assert not security.authorize_http(None)
    assert not security.authorize_http(security.token[:-1] + "x")
    assert Security().authorize_http(None)  # an open cluster is open over HTTP too


def test_tls_contexts_are_strict(tmp_path):
    import ssl

    files = generate(tmp_path)["node"]
    security = Security(tls_ca_file=str(files.ca_file), tls_cert=str(files.cert),
                        tls_key=str(files.key))
    for server_side in (True, False):
        context = security.ssl_context(server_side)
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_REQUIRED  # servers demand client certs
    assert security.ssl_context(True) is security.ssl_context(True)  # built once
    assert Security.generate().ssl_context(False) is None
