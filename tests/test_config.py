"""corral.config: defaults shipped in corral/corral.yaml, YAML files, CORRAL_* variables
and config.set, read by the objects that use each knob."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from corral import config

ROOT = Path(__file__).resolve().parent.parent


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_default_is_documented_by_a_comment_in_the_defaults_file():
    lines = config.DEFAULTS_FILE.read_text().splitlines()
    settings = [line for line in lines if re.match(r"\s*[\w-]+:\s*[^\s#]", line)]
    assert len(settings) == len(leaves(config.DEFAULTS))
    assert not [line for line in settings if "#" not in line]
    assert leaves(config.DEFAULTS)["scheduler.worker-ttl"] == 30.0


def test_set_reaches_the_servers_and_an_explicit_argument_wins():
    from corral.nanny import Nanny
    from corral.scheduler import Scheduler
    from corral.worker import Worker

    with config.set({"scheduler.worker-ttl": 7, "worker.heartbeat-interval": 0.25,
                     "nanny.max-backoff": 3, "scheduler.allowed-failures": 5}):
        scheduler = Scheduler()
        assert scheduler.worker_ttl == 7
        assert scheduler.state.allowed_failures == 5
        assert Scheduler(worker_ttl=2).worker_ttl == 2
        assert Worker("tcp://127.0.0.1:1").heartbeat_interval == 0.25
        assert Nanny("tcp://127.0.0.1:1", nthreads=1).max_backoff == 3
    assert Scheduler().worker_ttl == 30.0


def test_environment_variables_set_knobs_and_plumbing_variables_stay_out(monkeypatch):
    monkeypatch.setenv("CORRAL_SCHEDULER__WORKER_TTL", "12")
    monkeypatch.setenv("CORRAL_LOG_LEVEL", "debug")
    monkeypatch.setenv("CORRAL_TOKEN", "not-a-setting")
    try:
        config.refresh()
        assert config.get("scheduler.worker-ttl") == 12
        assert config.get("log-level") == "debug"
        assert "token" not in config.config.config
    finally:
        monkeypatch.undo()
        config.refresh()
    assert config.get("scheduler.worker-ttl") == 30.0


@pytest.mark.parametrize(("text", "value"), [("false", False), ("FALSE", False), ("no", False),
                                             ("true", True), ("True", True), ("yes", True)])
def test_booleans_in_the_environment_are_read_in_any_case(monkeypatch, text, value):
    monkeypatch.setenv("CORRAL_COMM__INPROC_SHORTCUT", text)
    config.refresh()
    try:
        assert config.get("comm.inproc-shortcut") is value
    finally:
        monkeypatch.delenv("CORRAL_COMM__INPROC_SHORTCUT")
        config.refresh()


def test_tls_files_come_from_the_configuration_when_the_environment_names_none(
        monkeypatch, tmp_path):
    from corral.security import from_environment

    ca, cert, key = (str(tmp_path / name) for name in ("ca.pem", "c.pem", "k.pem"))
    for path in (ca, cert, key):
        Path(path).write_text("")
    for name in ("CORRAL_TOKEN", "CORRAL_TOKEN_FILE", "CORRAL_TLS_CA_FILE", "CORRAL_TLS_CERT",
                 "CORRAL_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert from_environment() is None
    with config.set({"tls.ca-file": ca, "tls.cert": cert, "tls.key": key}):
        security = from_environment()
    assert security is not None
    assert (security.tls_ca_file, security.tls_cert, security.tls_key) == (ca, cert, key)


@pytest.mark.timeout(30)
def test_a_yaml_file_named_by_corral_config_is_read(tmp_path):
    (tmp_path / "mine.yaml").write_text("comm:\n  connect-timeout: 42\n")
    code = "from corral import config; print(config.get('comm.connect-timeout'))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=25,
        env={"PATH": "", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
             "CORRAL_CONFIG": str(tmp_path / "mine.yaml")},
    )
    assert result.stdout.split() == ["42"], result.stderr


def test_a_child_process_inherits_what_config_set_changed():
    from corral.deploy.process import child_environment

    code = "from corral import config; print(config.get('nanny.liveness-timeout'))"
    with config.set({"nanny.liveness-timeout": 9.5}):
        env = child_environment(None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=25, env={**env, "PYTHONPATH": str(ROOT)})
    assert result.stdout.split() == ["9.5"], result.stderr
