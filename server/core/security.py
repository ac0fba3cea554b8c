"""Request authentication: Twilio webhook signatures and short-lived media stream tokens.

Twilio signs every webhook with ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token,
URL + each POST field name+value sorted by name)). We rebuild the URL from the configured
public base URL (never the Host header: behind a proxy it is not what Twilio requested) and
compare in constant time, which twilio-python's ``RequestValidator`` does not do.

The media WebSocket cannot carry a query string, so the ``/twilio/voice`` answer hands the
stream a signed token as a ``<Parameter>``: ``v1.<payload>.<mac>``, base64url, HMAC-SHA256.
Each token carries a random id (``jti``) so the media route can spend it exactly once: the
handshake signature covers a fixed URL, so it alone cannot stop a replayed token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import structlog
from fastapi import HTTPException, Request

from dialgraph.server.core.enums import StreamSignal

if TYPE_CHECKING:
    from dialgraph.server.core.settings import Settings

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
TOKEN_VERSION = "v1"
MAX_TOKEN_CHARS = 500  # a <Parameter> value must stay under 500 characters
MAX_WEBHOOK_BODY = 64 * 1024  # Twilio's webhook forms are a few kB

Params = Mapping[str, str] | Iterable[tuple[str, str]]


# --- Twilio signatures ------------------------------------------------------------------------
def _pairs(params: Params) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        multi = getattr(params, "multi_items", None)  # starlette FormData / QueryParams
        return list(multi()) if callable(multi) else [(k, str(v)) for k, v in params.items()]
    return [(str(k), str(v)) for k, v in params]


def twilio_signature(auth_token: str, url: str, params: Params) -> str:
    """The signature Twilio sends for a request to ``url`` with form fields ``params``.

    Same algorithm as twilio-python's ``RequestValidator.compute_signature``: names sorted,
    repeated names contribute each distinct value in sorted order.
    """
    grouped: dict[str, set[str]] = {}
    for name, value in _pairs(params):
        grouped.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    mac = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """The URL without and with an explicit default port (Twilio signs either way)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    without = urlunsplit(parts._replace(netloc=prefix + host))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}"))
    return [without, with_port] if without != with_port else [without]


def is_valid_twilio_signature(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    """True when ``signature`` signs ``url`` + ``params`` (with or without the port), compared
    in constant time. A missing or empty signature is never valid."""
    if not signature or not auth_token:
        return False
    pairs = _pairs(params)
    given = signature.strip().encode("utf-8")
    ok = False
    for candidate in _port_variants(url):
        expected = twilio_signature(auth_token, candidate, pairs).encode("ascii")
        ok |= hmac.compare_digest(expected, given)
    return ok


def ws_base_url(public_url: str) -> str:
    """The public base URL with http -> ws and https -> wss."""
    if public_url.startswith("https://"):
        return "wss://" + public_url[len("https://") :]
    if public_url.startswith("http://"):
        return "ws://" + public_url[len("http://") :]
    return public_url


def ws_signature_ok(auth_token: str, public_url: str, path: str, signature: str | None) -> bool:
    """Check the media WebSocket handshake's ``X-Twilio-Signature``: it signs
    ``wss://host/path`` with no parameters; the path is tried with and without a final '/'."""
    base = ws_base_url(public_url.rstrip("/"))
    trimmed = path.rstrip("/") or "/"
    paths = {trimmed, trimmed if trimmed.endswith("/") else trimmed + "/"}
    return any(is_valid_twilio_signature(auth_token, base + p, (), signature) for p in sorted(paths))


# --- stream tokens ----------------------------------------------------------------------------
class InvalidStreamToken(ValueError):
    """A stream token is malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class StreamClaims:
    """What a valid stream token says about the socket that presents it."""

    call_sid: str
    thread_id: str
    flow: str
    signal: str  # ``str(StreamSignal)``, "" for a fresh call: ``StreamSignal.parse`` reads it
    expires_at: int
    jti: str  # random per token: the key under which the media route records its one use


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, message: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), message.encode("ascii"), hashlib.sha256).digest()


def issue_stream_token(
    secret: str,
    *,
    call_sid: str,
    thread_id: str,
    flow: str,
    ttl_s: int,
    signal: StreamSignal | None = None,
    now: float | None = None,
) -> str:
    """A compact url-safe token binding a media stream to a call, thread and flow until
    ``now + ttl_s``, with a fresh random id so it can be spent once; ``signal`` (None: a
    fresh call) travels as its string. Raises ValueError if the claims make it 500
    characters or longer."""
    if not secret:
        raise ValueError("stream token secret is empty")
    expires_at = int((time.time() if now is None else now) + ttl_s)
    jti = secrets.token_urlsafe(12)
    claims = {"c": call_sid, "t": thread_id, "f": flow, "s": str(signal) if signal else "", "e": expires_at, "j": jti}
    body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    signed = f"{TOKEN_VERSION}.{body}"
    token = f"{signed}.{_b64(_mac(secret, signed))}"
    if len(token) >= MAX_TOKEN_CHARS:
        raise ValueError(f"stream token would be {len(token)} characters (limit {MAX_TOKEN_CHARS})")
    return token


def verify_stream_token(secret: str, token: str, *, now: float | None = None) -> StreamClaims:
    """The claims of a token this server issued, or ``InvalidStreamToken``. Only the
    signature and expiry are checked here; spending the token once is the caller's job
    (``core.call_store.consume_stream_token``). A token without an id (issued before ids
    existed) is refused: Twilio then asks ``/stream-ended``, which answers a fresh one."""
    if not secret:
        raise InvalidStreamToken("stream token secret is empty")
    if not isinstance(token, str) or len(token) >= MAX_TOKEN_CHARS or not token.isascii():
        raise InvalidStreamToken("malformed stream token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise InvalidStreamToken("malformed stream token")
    signed = f"{parts[0]}.{parts[1]}"
    # Compare the encoded MAC, not decoded bytes: base64 has spare bits in its last
    # character, and a token must have exactly one valid spelling.
    if not hmac.compare_digest(_b64(_mac(secret, signed)).encode("ascii"), parts[2].encode("ascii")):
        raise InvalidStreamToken("stream token signature mismatch")
    try:
        raw: Any = json.loads(_unb64(parts[1]))
        claims = StreamClaims(
            call_sid=_str(raw["c"]),
            thread_id=_str(raw["t"]),
            flow=_str(raw["f"]),
            signal=_str(raw["s"]),
            expires_at=_int(raw["e"]),
            jti=_str(raw["j"]),
        )
        if not claims.jti:
            raise ValueError("empty token id")
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidStreamToken("malformed stream token") from exc
    if (time.time() if now is None else now) >= claims.expires_at:
        raise InvalidStreamToken("stream token expired")
    return claims


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    return value


# --- FastAPI glue -----------------------------------------------------------------------------
def public_url_for(settings: Settings, path: str) -> str:
    """The public URL of ``path`` on this server (what Twilio requests and signs)."""
    return settings.public_url + path


class BodyTooLarge(HTTPException):
    """413: a webhook body over ``MAX_WEBHOOK_BODY`` (Twilio's are a few kB)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")


async def read_capped_body(request: Request, limit: int = MAX_WEBHOOK_BODY) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes without reading it all:
    a declared Content-Length over the limit is refused before any byte is read; a body
    without one (chunked) is read until it passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge()
        except ValueError:
            raise HTTPException(status_code=400, detail="bad Content-Length") from None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge()
    return bytes(body)


async def twilio_params(request: Request) -> list[tuple[str, str]]:
    """The form fields of a Twilio webhook (urlencoded body, at most ``MAX_WEBHOOK_BODY``
    bytes, else 413), in order; [] for GET."""
    if request.method != "POST":
        return []
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return []
    body = await read_capped_body(request)
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return []


async def require_twilio_signature(request: Request) -> dict[str, str]:
    """FastAPI dependency: 403 unless ``X-Twilio-Signature`` signs this request's public URL
    and form fields; 413 for a body over ``MAX_WEBHOOK_BODY``. An unsigned request is refused
    before its body is read. Returns the form fields (last value wins) for the route to use."""
    settings: Settings = request.app.state.settings
    signature = request.headers.get(SIGNATURE_HEADER)
    if settings.validate_signatures and not signature:
        _rejected(request, "missing", "")
    pairs = await twilio_params(request)
    params = dict(pairs)
    if not settings.validate_signatures:
        log.warning("twilio signature check skipped (validate_signatures=false)", path=request.url.path)
        return params
    url = public_url_for(settings, request.url.path)
    if request.url.query:
        url += "?" + request.url.query
    if not is_valid_twilio_signature(settings.twilio_auth_token.get_secret_value(), url, pairs, signature):
        _rejected(request, "mismatch", params.get("CallSid", ""))
    return params


def _rejected(request: Request, reason: str, call_sid: str) -> NoReturn:
    log.warning(
        "twilio signature rejected", path=request.url.path, method=request.method, reason=reason, call_sid=call_sid[:64]
    )
    raise HTTPException(status_code=403, detail="invalid Twilio signature")
