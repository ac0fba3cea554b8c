"""The simulator's Twilio side for HTTP: signed webhook requests and TwiML parsed into verbs.

Requests are signed exactly as Twilio signs them (twilio-python's ``RequestValidator``:
HMAC-SHA1 over the full URL plus the sorted POST fields). TwiML is parsed with a real XML
parser; verbs the simulator cannot follow are kept as ``Unsupported`` so the run reports
them instead of guessing.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
MAX_TWIML_BYTES = 64 * 1024


class TwimlError(Exception):
    """The server answered something that is not valid TwiML (or not a 2xx)."""


@dataclass(frozen=True, slots=True)
class StreamVerb:
    url: str
    parameters: dict[str, str]
    status_callback: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectVerb:
    stream: StreamVerb | None
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class DialVerb:
    number: str
    action: str | None = None
    method: str = "POST"
    timeout_s: int = 30
    answer_on_bridge: bool = False
    whisper_url: str | None = None
    whisper_method: str = "POST"
    caller_id: str | None = None


@dataclass(frozen=True, slots=True)
class SayVerb:
    text: str


@dataclass(frozen=True, slots=True)
class PauseVerb:
    length_s: float = 1.0


@dataclass(frozen=True, slots=True)
class HangupVerb:
    pass


@dataclass(frozen=True, slots=True)
class RedirectVerb:
    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Unsupported:
    tag: str


Verb = ConnectVerb | DialVerb | SayVerb | PauseVerb | HangupVerb | RedirectVerb | Unsupported


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def parse_twiml(text: str | bytes, *, base_url: str) -> list[Verb]:
    """The verbs of a ``<Response>`` in order; relative URLs are resolved against ``base_url``."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_TWIML_BYTES:
        raise TwimlError(f"TwiML of {len(raw)} bytes is over Twilio's 64 kB limit")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise TwimlError(f"TwiML is not XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(f"TwiML root is <{root.tag}>, not <Response>")

    def url(value: str | None) -> str | None:
        return urljoin(base_url, value) if value else None

    verbs: list[Verb] = []
    for el in root:
        if el.tag == "Connect":
            stream = None
            for child in el:
                if child.tag != "Stream":
                    verbs.append(Unsupported(tag=f"Connect/{child.tag}"))
                    continue
                params = {p.get("name", ""): p.get("value", "") for p in child if p.tag == "Parameter"}
                stream = StreamVerb(
                    url=child.get("url", ""),
                    parameters=params,
                    status_callback=url(child.get("statusCallback")),
                    name=child.get("name"),
                )
            verbs.append(ConnectVerb(stream=stream, action=url(el.get("action")), method=el.get("method", "POST")))
        elif el.tag == "Dial":
            numbers = [c for c in el if c.tag == "Number"]
            number_el = numbers[0] if numbers else None
            number = (number_el.text if number_el is not None else el.text) or ""
            verbs.append(
                DialVerb(
                    number=number.strip(),
                    action=url(el.get("action")),
                    method=el.get("method", "POST"),
                    timeout_s=int(el.get("timeout", "30")),
                    answer_on_bridge=el.get("answerOnBridge", "false").lower() == "true",
                    whisper_url=url(number_el.get("url")) if number_el is not None else None,
                    whisper_method=(number_el.get("method", "POST") if number_el is not None else "POST"),
                    caller_id=el.get("callerId"),
                )
            )
        elif el.tag == "Say":
            verbs.append(SayVerb(text=(el.text or "").strip()))
        elif el.tag == "Pause":
            verbs.append(PauseVerb(length_s=float(el.get("length", "1"))))
        elif el.tag == "Hangup":
            verbs.append(HangupVerb())
        elif el.tag == "Redirect":
            verbs.append(RedirectVerb(url=url((el.text or "").strip()) or "", method=el.get("method", "POST")))
        else:
            verbs.append(Unsupported(tag=el.tag))
    return verbs


@dataclass
class WebhookLog:
    """Every request the simulator made as Twilio, with the status it got."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def errors(self) -> list[tuple[str, str, int]]:
        return [e for e in self.entries if not 200 <= e[2] < 300]


class TwilioWebhooks:
    """Signed requests to the server, the way Twilio makes them."""

    def __init__(self, *, base_url: str, auth_token: str, client: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._validator = RequestValidator(auth_token)
        host = urlsplit(base_url).hostname or ""
        loopback = host in ("127.0.0.1", "localhost", "::1")
        self._client = client or httpx.AsyncClient(timeout=15.0, trust_env=not loopback)
        self._own_client = client is None
        self.log = WebhookLog()

    def signature(self, url: str, params: dict[str, str] | None = None) -> str:
        return str(self._validator.compute_signature(url, params or {}))

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

    async def fetch_twiml(self, url: str, params: dict[str, str], *, method: str = "POST") -> list[Verb]:
        response = await self.request(url, params, method=method)
        if not 200 <= response.status_code < 300:
            raise TwimlError(f"{method} {urlsplit(url).path} answered {response.status_code}")
        return parse_twiml(response.content, base_url=str(response.url))

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()
