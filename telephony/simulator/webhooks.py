"""Twilio's HTTP side: signed webhook requests, the way Twilio makes them.

Requests are signed exactly as Twilio signs them (twilio-python's ``RequestValidator``:
HMAC-SHA1 over the full URL plus the sorted POST fields), so the server's validator is
checked against the SDK, not against itself.

- ``TwilioWebhooks`` is the simulator's call engine's client: absolute URLs from TwiML,
  every status logged, answers parsed as TwiML.
- ``TwilioWebhooks.fetch_audio`` GETs what a ``<Play>`` names (signed), as 8 kHz mu-law.
- ``TwilioWebhookClient`` posts to paths of a server that believes it is ``public_url``
  (behind a proxy, or an in-process app), with a correct or a deliberately wrong signature.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin, urlsplit

import httpx
import numpy as np
from twilio.request_validator import RequestValidator

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.simulator.protocol import DEFAULT_ACCOUNT_SID, SAMPLE_RATE
from dialgraph.telephony.simulator.twiml import TwimlError, Verb, parse_twiml

API_VERSION = "2010-04-01"
WAV_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave"})
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_MULAW = 7


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def new_call_sid() -> str:
    return new_sid("CA")


def call_params(
    sid: str,
    *,
    from_number: str = "+14155550100",
    to_number: str = "+15550009999",
    status: str = "in-progress",
    direction: str = "inbound",
    account_sid: str = DEFAULT_ACCOUNT_SID,
    **extra: str,
) -> dict[str, str]:
    """The standard parameters Twilio sends with every voice webhook."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": sid,
        "CallStatus": status,
        "Called": to_number,
        "Caller": from_number,
        "Direction": direction,
        "From": from_number,
        "To": to_number,
        **extra,
    }


def stream_signature(auth_token: str, public_url: str, path: str = "/twilio/media") -> str:
    """What Twilio sends in the media handshake's ``X-Twilio-Signature``: the ``wss://``
    URL of the stream, no parameters."""
    base = public_url.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return str(RequestValidator(auth_token).compute_signature(base + path, {}))


def wav_to_mulaw(data: bytes) -> bytes:
    """A WAV file's audio as 8 kHz mono mu-law: 16-bit PCM (any rate, mono or stereo) or
    mu-law; raises ``TwimlError`` for anything else."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TwimlError("<Play> audio is not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    body: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunk = data[pos + 8 : pos + 8 + size]
        if tag == b"fmt " and len(chunk) >= 16:
            audio_format, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunk)
            fmt = (audio_format, channels, rate, bits)
        elif tag == b"data":
            body = chunk
        pos += 8 + size + (size & 1)
    if fmt is None or body is None:
        raise TwimlError("<Play> WAV has no fmt or data chunk")
    audio_format, channels, rate, bits = fmt
    if audio_format == WAVE_FORMAT_MULAW and bits == 8:
        if channels == 1 and rate == SAMPLE_RATE:
            return body
        linear = bytes(audioop.ulaw2lin(body, 2))
    elif audio_format == WAVE_FORMAT_PCM and bits == 16:
        linear = body[: len(body) // 2 * 2]
    else:
        raise TwimlError(f"<Play> WAV format {audio_format} with {bits}-bit samples: 16-bit PCM or mu-law only")
    pcm = np.frombuffer(linear[: len(linear) // (2 * channels) * 2 * channels], dtype="<i2")
    mono = pcm.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        import soxr  # imported here: only resampled audio needs it

        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    out = (np.clip(mono, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return bytes(audioop.lin2ulaw(out, 2))


@dataclass
class WebhookLog:
    """Every request the simulator made as Twilio, with the status it got."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def errors(self) -> list[tuple[str, str, int]]:
        return [e for e in self.entries if not 200 <= e[2] < 300]


class TwilioWebhooks:
    """Signed requests to the server at absolute URLs (the simulator's call engine)."""

    def __init__(self, *, base_url: str, auth_token: str, client: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._validator = RequestValidator(auth_token)
        host = urlsplit(base_url).hostname or ""
        loopback = host in ("127.0.0.1", "localhost", "::1")
        self._client = client or httpx.AsyncClient(timeout=15.0, trust_env=not loopback)
        self._own_client = client is None
        self.log = WebhookLog()

    def signature(self, url: str, params: Mapping[str, str] | None = None) -> str:
        return str(self._validator.compute_signature(url, dict(params or {})))

    def absolute(self, url: str) -> str:
        return urljoin(self.base_url, url)

    async def request(self, url: str, params: dict[str, str], *, method: str = "POST") -> httpx.Response:
        """POST form fields (or GET with them in the query), signed; records the status."""
        url = self.absolute(url)
        if method.upper() == "GET":
            full = str(httpx.URL(url).copy_merge_params(params))
            headers = {"X-Twilio-Signature": self.signature(full)}
            response = await self._client.get(full, headers=headers)
        else:
            headers = {"X-Twilio-Signature": self.signature(url, params)}
            response = await self._client.post(url, data=params, headers=headers)
        self.log.entries.append((method.upper(), urlsplit(url).path, response.status_code))
        return response

    async def fetch_audio(self, url: str) -> bytes:
        """GET a ``<Play>`` URL the way Twilio fetches media (signed over the URL), as 8 kHz
        mu-law; ``TwimlError`` for a non-2xx, a type other than WAV, or a WAV it cannot read."""
        url = self.absolute(url)
        response = await self._client.get(url, headers={"X-Twilio-Signature": self.signature(url)})
        self.log.entries.append(("GET", urlsplit(url).path, response.status_code))
        if not 200 <= response.status_code < 300:
            raise TwimlError(f"<Play> GET {urlsplit(url).path} answered {response.status_code}")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in WAV_TYPES:
            raise TwimlError(f"<Play> of {kind or 'no content type'}: the simulator plays audio/wav only")
        return wav_to_mulaw(response.content)

    async def fetch_twiml(self, url: str, params: dict[str, str], *, method: str = "POST") -> list[Verb]:
        response = await self.request(url, params, method=method)
        if not 200 <= response.status_code < 300:
            raise TwimlError(f"{method} {urlsplit(url).path} answered {response.status_code}")
        return parse_twiml(response.content, base_url=str(response.url))

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


class TwilioWebhookClient:
    """Posts form webhooks to paths of ``http`` (its base URL may be anything) signed for
    ``public_url``, with a correct (or deliberately wrong) signature."""

    def __init__(self, http: httpx.AsyncClient, *, public_url: str, auth_token: str) -> None:
        self.http = http
        self.public_url = public_url.rstrip("/")
        self.validator = RequestValidator(auth_token)

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        return self.public_url + path + (f"?{urlencode(query)}" if query else "")

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        return str(self.validator.compute_signature(url, dict(params)))

    async def post(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        query: Mapping[str, str] | None = None,
        signature: str | None = None,
        signed_url: str | None = None,
        unsigned: bool = False,
    ) -> httpx.Response:
        """POST like Twilio. ``signed_url`` signs a different URL than the one requested
        (replay); ``signature`` sends a given header; ``unsigned`` sends none."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if not unsigned:
            headers["X-Twilio-Signature"] = signature or self.sign(signed_url or self.url(path, query), params)
        target = path + (f"?{urlencode(query)}" if query else "")
        return await self.http.post(target, content=urlencode(dict(params)), headers=headers)

    async def get(self, path: str, query: Mapping[str, str], *, unsigned: bool = False) -> httpx.Response:
        """GET like Twilio: the parameters are in the signed URL, nothing else is."""
        headers = {} if unsigned else {"X-Twilio-Signature": self.sign(self.url(path, query), {})}
        return await self.http.get(path + "?" + urlencode(dict(query)), headers=headers)
