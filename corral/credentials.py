"""Finding a scheduler's address and credentials: scheduler files and where to look.

``corral scheduler`` writes its address and credentials to ``--scheduler-file`` and to
a per-user default file; workers and clients find them through ``resolve``, which
tries, in order: credentials given explicitly, those of a ``LocalCluster`` in this
process, the environment (``CORRAL_TOKEN``, ``CORRAL_TOKEN_FILE``, ``CORRAL_TLS_*``),
then the scheduler file (given, or the default one) if it names the same address.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from corral.comm import normalize_address
from corral.security import Security, from_environment

SCHEDULER_FILE_ENV = "CORRAL_SCHEDULER_FILE"  # moves the per-user default file

_in_process: dict[str, Security] = {}  # address → credentials of LocalClusters here
_lock = threading.Lock()


def default_scheduler_file() -> Path:
    """``$CORRAL_SCHEDULER_FILE``, else ``~/.corral/scheduler.json``."""
    override = os.environ.get(SCHEDULER_FILE_ENV)
    return Path(override) if override else Path.home() / ".corral" / "scheduler.json"


def write_scheduler_file(path: str | os.PathLike[str], address: str,
                         security: Security | None) -> Path:
    """Write address and credentials, readable by this user only (mode 0600)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    record: dict[str, Any] = {"address": address}
    if security is not None:
        record["token"] = security.token
        record["tls"] = {"ca_file": security.tls_ca_file, "cert": security.tls_cert,
                         "key": security.tls_key} if security.tls else None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    path.chmod(0o600)  # O_CREAT's mode does not apply to a file that already existed
    return path


def read_scheduler_file(path: str | os.PathLike[str]) -> tuple[str, Security | None]:
    record = json.loads(Path(path).expanduser().read_text())
    if not isinstance(record, dict) or not isinstance(record.get("address"), str):
        raise ValueError(f"{path} is not a corral scheduler file (no address)")
    tls = record.get("tls") or {}
    if not (record.get("token") or tls):
        return record["address"], None
    return record["address"], Security(
        token=record.get("token"), tls_ca_file=tls.get("ca_file"),
        tls_cert=tls.get("cert"), tls_key=tls.get("key"),
    )


def remember(address: str, security: Security | None) -> None:
    """Let clients in this process find a local cluster's credentials by its address."""
    if security is not None:
        with _lock:
            _in_process[normalize_address(address)] = security


def forget(address: str) -> None:
    with _lock:
        _in_process.pop(normalize_address(address), None)


def resolve(
    address: str | None,
    security: Security | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
) -> tuple[str | None, Security | None]:
    """The address to use and the credentials for it, from the first source that has them."""
    if address is None and scheduler_file is not None:
        address, from_file = read_scheduler_file(scheduler_file)
        return address, security or from_file
    if address is None or security is not None:
        return address, security
    key = normalize_address(address)
    with _lock:
        known = _in_process.get(key)
    if known is not None:
        return address, known
    from_env = from_environment()
    if from_env is not None:
        return address, from_env
    path = Path(scheduler_file) if scheduler_file else default_scheduler_file()
    if path.is_file():
        try:
            filed_address, from_file = read_scheduler_file(path)
        except (OSError, ValueError):
            return address, None
        if normalize_address(filed_address) == key:
            return address, from_file
    return address, None
