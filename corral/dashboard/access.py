"""Who may see the dashboard: a Host-header check and token login with a cookie.

The Host check stops DNS rebinding: a page on another origin whose name resolves to
this machine still sends its own name as Host, which we refuse. The token is asked
once (``/login?token=…``, the link ``client.dashboard_link`` gives); the cookie that
login sets holds its expiry (12 h by default) and an HMAC of the token and the expiry,
never the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import time
from urllib.parse import quote

import psutil

from corral import config
from corral.security import Security

COOKIE = "corral-dashboard"
SESSION_HOURS_ENV = "CORRAL_DASHBOARD_SESSION_HOURS"
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


def session_lifetime() -> float:
    """Seconds a dashboard login lasts: ``$CORRAL_DASHBOARD_SESSION_HOURS``, else the
    configured ``dashboard.session-hours`` (12 h)."""
    hours = os.environ.get(SESSION_HOURS_ENV, "")
    try:
        return float(hours or config.get("dashboard.session-hours")) * 3600
    except ValueError:
        raise ValueError(f"${SESSION_HOURS_ENV} must be a number of hours, not {hours!r}") from None


def session_value(security: Security | None, expires: float) -> str | None:
    """What the login cookie holds: when it expires and a digest of the token and that
    time (None for an open cluster). Changing the time breaks the digest."""
    if security is None or security.token is None:
        return None
    stamp = str(int(expires))
    return f"{stamp}.{_digest(security, stamp)}"


def _digest(security: Security, stamp: str) -> str:
    message = b"corral dashboard session|" + stamp.encode()
    return hmac.new(security.token_bytes or b"", message, hashlib.sha256).hexdigest()


def _valid_session(security: Security, cookie: str, now: float) -> bool:
    stamp, _, digest = cookie.partition(".")
    if not stamp.isdigit() or int(stamp) <= now:
        return False
    return hmac.compare_digest(digest.encode(), _digest(security, stamp).encode())


def authorized(security: Security | None, cookie: str | None, authorization: str | None,
               now: float | None = None) -> bool:
    """A request may go on with an unexpired login cookie or an ``Authorization: Bearer``
    token."""
    if security is None or security.token is None:
        return True
    if cookie is not None and _valid_session(security, cookie,
                                             time.time() if now is None else now):
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and security.authorize_http(presented.strip())


def login_link(base_url: str, security: Security | None) -> str:
    """The dashboard at ``base_url`` for a browser. With a token the link logs the browser
    in once (it then holds a cookie), so it is as secret as the token."""
    if security is None or security.token is None:
        return f"{base_url}/status"
    return f"{base_url}/login?token={quote(security.token)}"
