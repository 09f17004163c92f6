"""Scheduler files: written atomically and privately, per scheduler, removed at shutdown.

The attacks here are another local user's: a file or symlink planted at the path a
scheduler will write its token to. Tests run as root make the planted file belong to
``nobody`` with ``os.chown``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from corral import Client
from corral.credentials import (
    add_to_default_file,
    read_scheduler_file,
    remove_from_default_file,
    remove_scheduler_file,
    resolve,
    same_endpoint,
    write_scheduler_file,
)
from corral.exceptions import CredentialsFileError
from corral.security import Security
from tests._helpers import free_ports, wait_until_blocking
from tests.test_security import corral_cli, stop

NOBODY = 65534
PLANTED = '{"address": "tcp://10.0.0.1:1"}'


def plant(path: Path) -> int:
    """Another user's file at ``path``, readable by them; an open fd to what they hold."""
    path.write_text(PLANTED)
    path.chmod(0o644)
    if os.getuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    return os.open(path, os.O_RDONLY)


def assert_private_and_ours(path: Path) -> None:
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode), "the path is still a symlink"
    assert info.st_uid == os.getuid()
    assert oct(info.st_mode & 0o777) == "0o600"


def test_a_file_planted_at_the_path_never_receives_the_token(tmp_path):
    path = tmp_path / "corral.json"
    theirs = plant(path)
    security = Security.generate()
    try:
        write_scheduler_file(path, "tcp://127.0.0.1:8786", security)
        assert os.read(theirs, 4096).decode() == PLANTED  # their file, untouched
    finally:
        os.close(theirs)
    assert_private_and_ours(path)
    assert read_scheduler_file(path) == ("tcp://127.0.0.1:8786", security)
    assert [p.name for p in tmp_path.iterdir()] == ["corral.json"]  # no temporary left


def test_a_symlink_at_the_path_is_replaced_not_followed(tmp_path):
    target = tmp_path / "theirs.json"
    os.close(plant(target))
    path = tmp_path / "corral.json"
    path.symlink_to(target)
    security = Security.generate()
    write_scheduler_file(path, "tcp://127.0.0.1:8786", security)
    assert target.read_text() == PLANTED
    assert_private_and_ours(path)
    assert read_scheduler_file(path)[1] == security


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as two users")
def test_a_file_that_cannot_be_replaced_is_refused_with_one_line():
    """In a sticky shared directory (like /tmp) nobody may replace another user's file:
    the scheduler, here uid nobody, must refuse rather than write into root's file."""
    shared = Path(tempfile.mkdtemp(prefix="corral-shared-"))
    try:
        shared.chmod(0o1777)
        path = shared / "corral.json"
        path.write_text(PLANTED)
        path.chmod(0o666)  # even a file it could write to is not written through
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become nobody and try
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                write_scheduler_file(path, "tcp://127.0.0.1:8786", Security.generate())
                os.write(write_end, b"written")
            except CredentialsFileError as e:
                os.write(write_end, str(e).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            said = pipe.read()
        os.waitpid(pid, 0)
        assert "belongs to another user (uid 0)" in said
        assert "\n" not in said
        assert path.read_text() == PLANTED
        assert [p.name for p in shared.iterdir()] == ["corral.json"]  # no temporary left
    finally:
        shutil.rmtree(shared)


def test_tls_paths_are_stored_absolute(tmp_path, monkeypatch):
    security = Security.temporary()
    monkeypatch.chdir(Path(security.tls_ca_file).parent)
    relative = Security(token="t", tls_ca_file=Path(security.tls_ca_file).name,
                        tls_cert=Path(security.tls_cert).name, tls_key=Path(security.tls_key).name)
    path = write_scheduler_file(tmp_path / "s.json", "tls://127.0.0.1:8786", relative)
    monkeypatch.chdir(tmp_path)  # a worker started elsewhere
    _, read = read_scheduler_file(path)
    assert read.tls_ca_file == security.tls_ca_file
    assert (read.tls_cert, read.tls_key) == (security.tls_cert, security.tls_key)


def test_the_default_file_keeps_every_running_scheduler(tmp_path, monkeypatch):
    default = tmp_path / "home" / "scheduler.json"
    monkeypatch.setenv("CORRAL_SCHEDULER_FILE", str(default))
    for name in ("CORRAL_TOKEN", "CORRAL_TOKEN_FILE", "CORRAL_TLS_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    first, second = Security.generate(), Security.generate()
    add_to_default_file("tcp://127.0.0.1:1001", first)
    add_to_default_file("tcp://127.0.0.1:1002", second)
    assert read_scheduler_file(default)[0] == "tcp://127.0.0.1:1002"  # the newest
    assert resolve("tcp://127.0.0.1:1001")[1] == first
    assert resolve("tcp://localhost:1002")[1] == second  # a host alias finds it too
    remove_from_default_file("tcp://127.0.0.1:1002")
    assert read_scheduler_file(default) == ("tcp://127.0.0.1:1001", first)
    assert resolve("tcp://127.0.0.1:1002")[1] is None
    remove_from_default_file("tcp://127.0.0.1:1001")
    assert not default.exists()


def test_a_scheduler_removes_only_a_file_that_still_names_it(tmp_path):
    path = tmp_path / "s.json"
    write_scheduler_file(path, "tcp://127.0.0.1:1001", None)
    write_scheduler_file(path, "tcp://127.0.0.1:1002", None)  # a successor took the path
    remove_scheduler_file(path, "tcp://127.0.0.1:1001")
    assert read_scheduler_file(path)[0] == "tcp://127.0.0.1:1002"
    remove_scheduler_file(path, "tcp://127.0.0.1:1002")
    assert not path.exists()


def test_host_aliases_are_one_endpoint():
    assert same_endpoint("tcp://localhost:8786", "tcp://127.0.0.1:8786")
    assert same_endpoint("127.0.0.1:8786", "tcp://127.0.0.1:8786")
    assert not same_endpoint("tcp://localhost:8786", "tcp://127.0.0.1:8787")
    assert not same_endpoint("tls://localhost:8786", "tcp://127.0.0.1:8786")
    assert not same_endpoint("tcp://no-such-host.invalid:8786", "tcp://127.0.0.1:8786")


# -- with real schedulers ---------------------------------------------------------------------


def wait_for_record(path: Path, port: int | None, proc, timeout: float = 30) -> None:
    """Until ``path`` names the scheduler on ``port`` (None: until it is gone)."""
    def address() -> str | None:
        try:
            return str(json.loads(path.read_text())["address"])
        except FileNotFoundError:
            return None

    def recorded() -> bool:
        now = address()
        if (now is None) if port is None else (now or "").endswith(f":{port}"):
            return True
        assert proc is None or proc.poll() is None, proc.communicate()[0]
        return False

    wait_until_blocking(recorded, timeout,
                        what=lambda: f"{path} holds {address()}, expected port {port}")


def scheduler_env(default: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_TOKEN")}
    env["CORRAL_SCHEDULER_FILE"] = str(default)
    return env


@pytest.mark.timeout(120)
def test_two_schedulers_of_one_user_keep_their_credentials(tmp_path, monkeypatch):
    default = tmp_path / "home" / "scheduler.json"
    monkeypatch.setenv("CORRAL_SCHEDULER_FILE", str(default))
    shared = tmp_path / "shared.json"
    ports = free_ports(2)
    env = scheduler_env(default)
    first = corral_cli("scheduler", "--port", str(ports[0]), "--dashboard-address", "none",
                       "--scheduler-file", str(shared), env=env)
    second = None
    try:
        wait_for_record(default, ports[0], first)
        second = corral_cli("scheduler", "--port", str(ports[1]), "--dashboard-address", "none",
                            env=env)
        wait_for_record(default, ports[1], second)
        for address in (f"tcp://localhost:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}"):
            with Client(address, timeout=10) as client:  # the token from the default file
                assert client.scheduler_info()["workers"] == {}
        stop(second)
        wait_for_record(default, ports[0], first)  # the first one's entry is still there
        with Client(f"tcp://127.0.0.1:{ports[0]}", timeout=10) as client:
            assert client.scheduler_info()["workers"] == {}
    finally:
        stop(*([second] if second else []), first)
    assert not default.exists()
    assert not shared.exists()


@pytest.mark.timeout(120)
def test_the_file_appears_only_once_the_scheduler_takes_its_token(tmp_path):
    """A restarted scheduler: its file must not offer the last run's token meanwhile."""
    shared = tmp_path / "shared.json"
    (port,) = free_ports(1)
    env = scheduler_env(tmp_path / "default.json")
    args = ("scheduler", "--port", str(port), "--dashboard-address", "none",
            "--scheduler-file", str(shared))
    earlier = corral_cli(*args, env=env)
    wait_for_record(shared, port, earlier)
    stop(earlier)
    later = corral_cli(*args, env=env)
    try:
        def appeared() -> bool:  # take the credentials the moment they appear
            assert later.poll() is None, later.communicate()[0]
            return shared.exists()

        wait_until_blocking(appeared, 30, what=f"{shared} to appear")
        address, security = read_scheduler_file(shared)
        with Client(address, security=security, timeout=10) as client:
            assert client.scheduler_info()["workers"] == {}
    finally:
        stop(later)
