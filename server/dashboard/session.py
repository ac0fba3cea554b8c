"""The dashboard's login session and CSRF tokens, signed with a key derived from the admin token.

Logging in exchanges the admin token (typed into a form, never put in a URL) for an
HttpOnly, SameSite=Strict cookie: ``<expiry>.<nonce>.<mac>``. Nothing is kept server-side,
so any instance accepts any instance's cookie, and changing ``admin_token`` logs everybody
out. Every state-changing form carries a CSRF token derived from the session's nonce (a
synchronizer token without storage); it is checked together with the request's ``Origin``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "dialgraph_session"
PRE_COOKIE = "dialgraph_login"  # the login form's own CSRF pair (double-submit), before a session exists


def _key(admin_token: str) -> bytes:
    return hashlib.sha256(b"dialgraph-dashboard-session\x00" + admin_token.encode("utf-8")).digest()


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\x00".join(parts).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A valid dashboard session: when it ends and its CSRF token."""

    expires_at: int
    csrf: str


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens for one admin token."""

    def __init__(self, admin_token: str, *, lifetime_s: float) -> None:
        self.enabled = bool(admin_token)
        self._key = _key(admin_token)
        self._token = admin_token.encode("utf-8")
        self.lifetime_s = lifetime_s

    def check_token(self, given: str) -> bool:
        """The typed admin token is right (constant time; never true when none is set)."""
        return self.enabled and hmac.compare_digest(given.strip().encode("utf-8"), self._token)

    def issue(self, *, now: float | None = None) -> str:
        """A new session cookie value."""
        expires = int((now if now is not None else time.time()) + self.lifetime_s)
        nonce = secrets.token_urlsafe(16)
        return f"{expires}.{nonce}.{_mac(self._key, 'session', str(expires), nonce)}"

    def verify(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie value stands for, or None (absent, forged, expired)."""
        if not self.enabled or not value:
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires, nonce, mac = parts
        if not hmac.compare_digest(mac, _mac(self._key, "session", expires, nonce)):
            return None
        if int(expires) <= (now if now is not None else time.time()):
            return None
        return Session(expires_at=int(expires), csrf=_mac(self._key, "csrf", nonce))

    @staticmethod
    def check_csrf(session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(session.csrf, given or "")


def new_login_nonce() -> str:
    """The login form's CSRF value: set as a cookie and echoed in the form."""
    return secrets.token_urlsafe(16)
