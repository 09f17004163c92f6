"""Who may see the dashboard: a Host-header check and token login with a cookie.

The Host check stops DNS rebinding: a page on another origin whose name resolves to
this machine still sends its own name as Host, which we refuse. The token is asked
once (``/login?token=…``, the link ``client.dashboard_link`` gives); the cookie that
login sets holds a value derived from the token, never the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import socket

import psutil

from corral.security import Security

COOKIE = "corral-dashboard"
WILDCARDS = ("", "0.0.0.0", "::")


def allowed_hosts(bind_host: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Names a browser may use for this dashboard: its own addresses and this machine's."""
    hosts = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn(), *extra}
    if bind_host in WILDCARDS:
        for addresses in psutil.net_if_addrs().values():
            hosts.update(a.address.split("%")[0] for a in addresses
                         if a.family in (socket.AF_INET, socket.AF_INET6))
    else:
        hosts.add(bind_host)
    return frozenset(h.lower() for h in hosts)


def host_name(header: str) -> str:
    """``example:8787`` → ``example``; ``[::1]:8787`` → ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def session_value(security: Security | None) -> str | None:
    """What the login cookie holds: a digest of the token (None for an open cluster)."""
    if security is None or security.token is None:
        return None
    return hmac.new(security.token_bytes, b"corral dashboard session", hashlib.sha256).hexdigest()


def authorized(security: Security | None, cookie: str | None, authorization: str | None) -> bool:
    """A request may go on with the login cookie or an ``Authorization: Bearer`` token."""
    expected = session_value(security)
    if expected is None:
        return True
    if cookie is not None and hmac.compare_digest(cookie.encode(), expected.encode()):
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and security.authorize_http(presented.strip())  # type: ignore[union-attr]
