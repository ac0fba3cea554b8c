"""Webhook signatures, Stripe-style: ``X-Dialgraph-Signature: t=<unix>,v1=<hex>``.

``v1`` is the hex HMAC-SHA256, keyed with the endpoint's secret, of ``"<t>.<body>"`` (the
timestamp, a dot, then the exact bytes of the request body). A receiver recomputes it over
the raw body it got (before any JSON parsing), compares in constant time and refuses a
timestamp more than 5 minutes away from its clock, so a captured request cannot be replayed
later. ``X-Dialgraph-Delivery`` (the delivery id) is the same on every retry of one delivery:
receivers use it to drop duplicates. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Dialgraph-Signature"
EVENT_HEADER = "X-Dialgraph-Event"
DELIVERY_HEADER = "X-Dialgraph-Delivery"
TOLERANCE_S = 300


def _mac(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Dialgraph-Signature`` value of ``body`` sent at ``timestamp`` (now)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_mac(secret, body, t)}"


def verify_signature(
    secret: str, body: bytes | str, header: str, tolerance_s: float = TOLERANCE_S, *, now: float | None = None
) -> bool:
    """True when ``header`` (``t=...,v1=...``; several ``v1`` allowed) signs ``body`` with
    ``secret`` and its timestamp is within ``tolerance_s`` of ``now`` (either way)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates or not secret:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, raw, timestamp)
    return any(hmac.compare_digest(expected, c) for c in candidates)


__all__ = ["DELIVERY_HEADER", "EVENT_HEADER", "SIGNATURE_HEADER", "TOLERANCE_S", "sign", "verify_signature"]
