"""The seed's Cluster over SSH, against an sshd this test starts on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from corral import Cluster, Pool
from tests._helpers import free_ports, wait_until_blocking

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

pytestmark = pytest.mark.skipif(
    not os.path.exists(SSHD) or os.geteuid() != 0,
    reason="needs root and an sshd binary (apt-get install openssh-server)",
)


@pytest.fixture
def sshd(tmp_path):
    """An sshd on a free loopback port with a throwaway host key and client key."""
    (port,) = free_ports(1)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / name],
                       check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "client_key.pub").read_text())
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"PidFile {tmp_path / 'sshd.pid'}\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    daemon = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stderr=subprocess.PIPE)
    client_config = tmp_path / "ssh_config"
    client_config.write_text(
        f"Host 127.0.0.1\n  Port {port}\n  IdentityFile {tmp_path / 'client_key'}\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    ssh = ["ssh", "-F", str(client_config), "-o", "BatchMode=yes"]
    deadline = time.monotonic() + 10
    while subprocess.run([*ssh, "127.0.0.1", "true"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or daemon.poll() is not None:
            daemon.kill()
            daemon.wait()
            pytest.skip(f"could not start sshd: {daemon.stderr.read1(2000)!r}")
        time.sleep(0.1)
    yield ssh
    daemon.terminate()
    daemon.wait(timeout=10)
    daemon.stderr.close()


def test_seed_example_with_workers_started_over_ssh(sshd):
    center, w1, w2 = free_ports(3)
    c = Cluster(
        hosts=[f"127.0.0.1:{w1}", f"127.0.0.1:{w2}"],
        center=f"127.0.0.1:{center}",
        ssh=sshd,
        remote_python=sys.executable,
        always_ssh=True,
    )
    p = Pool(f"127.0.0.1:{center}")
    a, b, d = p.map(lambda x: x * 10, [1, 2, 3])
    assert (a.get(), b.get(), d.get()) == (10, 20, 30)
    # A lambda travels by value: the workers' cwd (ssh's home) cannot import this module.
    lineage = p.client.run(lambda: [q.name() for q in __import__("psutil").Process().parents()])
    assert len(lineage) == 2
    assert all("sshd" in names for names in lineage.values())  # really started through ssh
    remote_pids = list(p.client.run(os.getpid).values())
    scheduler_pid = next(conn.pid for conn in psutil.net_connections("tcp")
                         if conn.laddr.port == center and conn.status == psutil.CONN_LISTEN)
    p.close()
    c.close()
    wait_until_blocking(
        lambda: not any(psutil.pid_exists(pid) for pid in [*remote_pids, scheduler_pid]), 15,
        what="the scheduler and workers to end with their ssh sessions")
