"""Credentials for corral connections.

``Security(token=...)`` turns on mutual authentication: both ends prove they know the
token (HMAC-SHA256 over fresh nonces) and the token itself never crosses the wire.
The TLS fields arrive with the security issue; the dashboard will read its own hook.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

TOKEN_BYTES = 32  # 256 bits


def new_token() -> str:
    """A fresh random token with 256 bits of entropy, URL-safe text."""
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class Security:
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise ValueError("token must be a non-empty string")

    @classmethod
    def generate(cls) -> Security:
        """Credentials with a new random token."""
        return cls(token=new_token())

    @property
    def token_bytes(self) -> bytes | None:
        return None if self.token is None else self.token.encode()

    def __repr__(self) -> str:
        return f"Security(token={'<redacted>' if self.token else None})"
