"""TwiML as Twilio reads it: a server's answer parsed into verbs.

TwiML is parsed with a real XML parser; verbs the simulator cannot follow are kept as
``Unsupported`` so the run reports them instead of guessing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urljoin

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
class PlayVerb:
    """``<Play loop digits>URL</Play>``: ``loop`` 0 means "until interrupted" (Twilio: up to 1000)."""

    url: str
    loop: int = 1
    digits: str | None = None


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


Verb = ConnectVerb | DialVerb | SayVerb | PlayVerb | PauseVerb | HangupVerb | RedirectVerb | Unsupported


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
        elif el.tag == "Play":
            try:
                loop = int(el.get("loop", "1"))
            except ValueError as exc:
                raise TwimlError(f"<Play loop> is not a number: {el.get('loop')!r}") from exc
            digits = el.get("digits")
            verbs.append(PlayVerb(url=url((el.text or "").strip()) or "", loop=max(0, loop), digits=digits))
        elif el.tag == "Pause":
            verbs.append(PauseVerb(length_s=float(el.get("length", "1"))))
        elif el.tag == "Hangup":
            verbs.append(HangupVerb())
        elif el.tag == "Redirect":
            verbs.append(RedirectVerb(url=url((el.text or "").strip()) or "", method=el.get("method", "POST")))
        else:
            verbs.append(Unsupported(tag=el.tag))
    return verbs


def stream_parameters(twiml: str | bytes) -> dict[str, str]:
    """The ``<Parameter>``s of the first ``<Connect><Stream>`` in ``twiml`` ({} if none)."""
    for verb in parse_twiml(twiml, base_url=""):
        if isinstance(verb, ConnectVerb) and verb.stream is not None:
            return dict(verb.stream.parameters)
    return {}
