"""Credentials for corral connections: a shared token, TLS certificates, or both.

``Security(token=...)`` turns on mutual authentication in the handshake: both ends
prove they know the token (HMAC-SHA256 over fresh nonces); the token never crosses the
wire. The TLS fields encrypt ``tls://`` connections and authenticate both ends with
certificates signed by one CA (servers require client certificates). The two combine:
TLS protects the bytes, the token proves membership even to someone who holds a cert.
"""

from __future__ import annotations

import atexit
import functools
import hmac
import os
import secrets
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_BYTES = 32  # 256 bits

# How credentials reach child processes and CLI commands: never in argv, where any
# local user could read them.
TOKEN_ENV = "CORRAL_TOKEN"
TOKEN_FILE_ENV = "CORRAL_TOKEN_FILE"
TLS_CA_FILE_ENV = "CORRAL_TLS_CA_FILE"
TLS_CERT_ENV = "CORRAL_TLS_CERT"
TLS_KEY_ENV = "CORRAL_TLS_KEY"
TLS_CHECK_HOSTNAME_ENV = "CORRAL_TLS_CHECK_HOSTNAME"
# The ways to hand a token over, named in every "token missing or wrong" refusal.
TOKEN_HINT = (f"pass the scheduler's token with ${TOKEN_ENV} (or ${TOKEN_FILE_ENV}), "
              "--scheduler-file PATH, or --token-file/--token "
              "(in Python: Client(scheduler_file=...) or security=Security(token=...))")


def new_token() -> str:
    """A fresh random token with 256 bits of entropy, URL-safe text."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def redact(token: str | None) -> str:
    """Enough of a token to tell two apart in a log, not enough to use it."""
    return "<none>" if not token else f"{token[:4]}…"


@dataclass(frozen=True)
class Security:
    token: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # Off by default: the CA is the cluster's own, so any certificate it signed is a
    # member, and workers are usually reached by IP addresses no certificate lists.
    tls_check_hostname: bool = False

    def __post_init__(self) -> None:
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise ValueError("token must be a non-empty string")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give tls_cert and tls_key together")
        if self.tls_cert is not None and self.tls_ca_file is None:
            raise ValueError("TLS needs tls_ca_file too: peers are verified against it")
        for path in (self.tls_ca_file, self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"TLS file not found: {path}")

    @classmethod
    def generate(cls) -> Security:
        """Credentials with a new random token."""
        return cls(token=new_token())

    @classmethod
    def temporary(cls, token: bool = True) -> Security:
        """A fresh CA, certificate and (by default) token, for this process and its children.

        The files live in a private temporary directory removed when this process exits.
        """
        from corral.certs import generate

        directory = tempfile.mkdtemp(prefix="corral-tls-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        files = generate(directory)["node"]
        return cls(
            token=new_token() if token else None,
            tls_ca_file=str(files.ca_file), tls_cert=str(files.cert), tls_key=str(files.key),
        )

    @property
    def token_bytes(self) -> bytes | None:
        return None if self.token is None else self.token.encode()

    @property
    def tls(self) -> bool:
        return self.tls_ca_file is not None

    def ssl_context(self, server_side: bool) -> ssl.SSLContext | None:
        """The context for ``tls://`` connections (None without TLS settings)."""
        return _ssl_context(self, server_side) if self.tls else None

    def authorize_http(self, presented: str | None) -> bool:
        """The hook for HTTP endpoints (the dashboard): may this request go on?

        With a token, only a request presenting it does; an open cluster lets all in.
        """
        if self.token is None:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(),
                                                             self.token.encode())

    def environment(self) -> dict[str, str]:
        """Environment variables that hand these credentials to a child process."""
        env = {TOKEN_ENV: self.token} if self.token else {}
        for name, value in ((TLS_CA_FILE_ENV, self.tls_ca_file), (TLS_CERT_ENV, self.tls_cert),
                            (TLS_KEY_ENV, self.tls_key)):
            if value:
                env[name] = value
        if self.tls_check_hostname:
            env[TLS_CHECK_HOSTNAME_ENV] = "1"
        return env

    def __repr__(self) -> str:
        tls = f", tls_cert={self.tls_cert!r}" if self.tls else ""
        return f"Security(token={'<redacted>' if self.token else None}{tls})"


def scheme_for(security: Security | None) -> str:
    """``tls`` when the credentials include TLS, else ``tcp``: what to listen on."""
    return "tls" if security is not None and security.tls else "tcp"


@functools.lru_cache(maxsize=32)
def _ssl_context(security: Security, server_side: bool) -> ssl.SSLContext:
    """Built once per credentials and side: loading keys costs milliseconds."""
    purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
    context = ssl.create_default_context(purpose, cafile=security.tls_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # 1.3 is preferred when both have it
    context.verify_mode = ssl.CERT_REQUIRED  # servers verify clients too: mutual TLS
    if not server_side:
        context.check_hostname = security.tls_check_hostname
    if security.tls_cert is not None:
        context.load_cert_chain(security.tls_cert, security.tls_key)
    return context


def from_environment() -> Security | None:
    """Credentials from ``CORRAL_TOKEN`` / ``CORRAL_TOKEN_FILE`` and ``CORRAL_TLS_*``; TLS
    files not named there come from ``corral.config`` (``tls.ca-file``, ...)."""
    from corral import config

    token = os.environ.get(TOKEN_ENV)
    if not token and os.environ.get(TOKEN_FILE_ENV):
        token = read_token_file(os.environ[TOKEN_FILE_ENV])
    ca, cert, key = (os.environ.get(name) or config.get(f"tls.{key}")
                     for name, key in ((TLS_CA_FILE_ENV, "ca-file"), (TLS_CERT_ENV, "cert"),
                                       (TLS_KEY_ENV, "key")))
    if not (token or ca):
        return None
    check_hostname = os.environ.get(TLS_CHECK_HOSTNAME_ENV, "") not in ("", "0")
    return Security(token=token or None, tls_ca_file=ca, tls_cert=cert, tls_key=key,
                    tls_check_hostname=check_hostname)


def read_token_file(path: str | os.PathLike[str]) -> str:
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token
