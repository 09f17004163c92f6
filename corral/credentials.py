"""Finding a scheduler's address and credentials: scheduler files and where to look.

``corral scheduler`` writes its address and credentials to ``--scheduler-file`` and to
a per-user default file once it listens, and removes them when it shuts down cleanly;
workers and clients find them through ``resolve``, which tries, in order: credentials
given explicitly, those of a ``LocalCluster`` in this process, the environment
(``CORRAL_TOKEN``, ``CORRAL_TOKEN_FILE``, ``CORRAL_TLS_*``), then the scheduler file
(given, or the default one) if it names the same address (host aliases count:
``localhost`` finds what ``127.0.0.1`` saved).

A file holds one record, ``{"address", "token", "tls"}``. The default file is shared by
every scheduler of this user: it holds the newest one's record at the top and the
others still running under ``"others"``, so a second scheduler adds itself instead of
taking the first one's credentials away.

Files are never written in place: a new file (``O_EXCL|O_NOFOLLOW``, mode 0600) in the
same directory is renamed over the old one, so a file or symlink someone else put at
the path never receives the token.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corral.comm import normalize_address
from corral.comm.addressing import parse_address
from corral.exceptions import CredentialsFileError
from corral.security import Security, from_environment

SCHEDULER_FILE_ENV = "CORRAL_SCHEDULER_FILE"  # moves the per-user default file

Record = dict[str, Any]

_in_process: dict[str, Security] = {}  # address → credentials of LocalClusters here
_lock = threading.Lock()


def default_scheduler_file() -> Path:
    """``$CORRAL_SCHEDULER_FILE``, else ``~/.corral/scheduler.json``."""
    override = os.environ.get(SCHEDULER_FILE_ENV)
    return Path(override) if override else Path.home() / ".corral" / "scheduler.json"


# -- writing --------------------------------------------------------------------------------


def _record(address: str, security: Security | None) -> Record:
    record: Record = {"address": address}
    if security is not None:
        record["token"] = security.token
        # Absolute: workers started in another directory read the same file.
        record["tls"] = {name: os.path.abspath(path) for name, path in (
            ("ca_file", security.tls_ca_file), ("cert", security.tls_cert),
            ("key", security.tls_key)) if path} if security.tls else None
    return record


def _replace(path: Path, record: Record) -> None:
    """Put ``record`` at ``path`` atomically, in a new file only this user can read."""
    try:  # mkstemp opens O_CREAT|O_EXCL|O_NOFOLLOW with mode 0600
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise CredentialsFileError(f"cannot write credentials next to {path}: {e}") from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)  # replaces a symlink itself, never what it points to
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(e, PermissionError):
            raise CredentialsFileError(
                f"cannot write credentials to {path}: {_owner(path)}it cannot be replaced "
                "(a sticky shared directory?); remove it or choose another path") from None
        raise


def _owner(path: Path) -> str:
    with contextlib.suppress(OSError):
        uid = path.lstat().st_uid
        if uid != os.getuid():
            return f"it belongs to another user (uid {uid}) and "
    return ""


def _directory(path: str | os.PathLike[str]) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of the default file between this user's schedulers."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_scheduler_file(path: str | os.PathLike[str], address: str,
                         security: Security | None) -> Path:
    """Write one scheduler's address and credentials to ``path`` (mode 0600, atomically)."""
    path = _directory(path)
    _replace(path, _record(address, security))
    return path


def remove_scheduler_file(path: str | os.PathLike[str], address: str) -> None:
    """Remove ``path`` if it still names ``address`` (another scheduler may have taken it)."""
    path = Path(path).expanduser()
    if any(r.get("address") == address for r in _records(path)[:1]):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def add_to_default_file(address: str, security: Security | None) -> Path:
    """Make this scheduler the newest in the per-user default file, keeping the others."""
    path = _directory(default_scheduler_file())
    with _locked(path.parent):
        others = [r for r in _records(path) if r.get("address") != address]
        _replace(path, {**_record(address, security), "others": others})
    return path


def remove_from_default_file(address: str) -> None:
    """Take this scheduler out of the default file; remove the file when none is left."""
    path = default_scheduler_file()
    if not path.parent.is_dir():
        return
    with _locked(path.parent):
        records = _records(path)
        remaining = [r for r in records if r.get("address") != address]
        if len(remaining) == len(records):
            return
        if not remaining:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        newest, *others = remaining
        _replace(path, {**newest, "others": others})


# -- reading --------------------------------------------------------------------------------


def _records(path: Path) -> list[Record]:
    """The records in a scheduler file, the newest first ([] if it is absent or unreadable)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict) or not isinstance(record.get("address"), str):
        return []
    others = record.pop("others", None)  # newest first, like the result
    older = [r for r in others if isinstance(r, dict) and isinstance(r.get("address"), str)] \
        if isinstance(others, list) else []
    return [record, *older]


def _security(record: Record) -> Security | None:
    tls = record.get("tls") or {}
    if not (record.get("token") or tls):
        return None
    return Security(token=record.get("token"), tls_ca_file=tls.get("ca_file"),
                    tls_cert=tls.get("cert"), tls_key=tls.get("key"))


def read_scheduler_file(path: str | os.PathLike[str]) -> tuple[str, Security | None]:
    """The address and credentials of the (newest) scheduler a file names."""
    path = Path(path).expanduser()
    records = _records(path)
    if not records:
        path.read_text()  # a missing or unreadable file raises its own OSError
        raise ValueError(f"{path} is not a corral scheduler file (no address)")
    return records[0]["address"], _security(records[0])


def remember(address: str, security: Security | None) -> None:
    """Let clients in this process find a local cluster's credentials by its address."""
    if security is not None:
        with _lock:
            _in_process[normalize_address(address)] = security


def forget(address: str) -> None:
    with _lock:
        _in_process.pop(normalize_address(address), None)


def same_endpoint(a: str, b: str) -> bool:
    """Whether two addresses name one listener: the same scheme and port, and the same
    host or host names with an IP address in common (``localhost`` and ``127.0.0.1``)."""
    first, second = parse_address(a), parse_address(b)
    if (first.scheme, first.port) != (second.scheme, second.port):
        return False
    return first.host == second.host or bool(_ips(first.host) & _ips(second.host))


@functools.lru_cache(maxsize=128)
def _ips(host: str) -> frozenset[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


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
    with _lock:
        known = dict(_in_process)
    key = normalize_address(address)
    if key in known:
        return address, known[key]
    for local, credentials in known.items():
        if same_endpoint(local, key):
            return address, credentials
    from_env = from_environment()
    if from_env is not None:
        return address, from_env
    path = Path(scheduler_file) if scheduler_file else default_scheduler_file()
    for record in _records(path):
        with contextlib.suppress(ValueError):  # a record with a malformed address
            if same_endpoint(record["address"], key):
                return address, _security(record)
    return address, None
