"""TwiML answers, built with twilio-python's ``VoiceResponse``.

Every builder returns the XML text; every answer stays under Twilio's 64 kB limit (free text
such as a transfer summary is cut short before it could push it over). URLs of our own
webhooks are built from the public base URL, because Twilio signs what it requests.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

from dialgraph.server.core.enums import StreamSignal
from dialgraph.server.core.flow_config import TransferTarget
from dialgraph.server.core.security import issue_stream_token, public_url_for
from dialgraph.server.core.settings import Settings

MAX_TWIML_BYTES = 64_000
MAX_SAY_CHARS = 2_000  # far under the limit; a whisper is meant to be one sentence

VOICE_PATH = "/twilio/voice"
STATUS_PATH = "/twilio/status"
STREAM_STATUS_PATH = "/twilio/stream-status"
STREAM_ENDED_PATH = "/twilio/stream-ended"
DIAL_ENDED_PATH = "/twilio/dial-ended"
WHISPER_PATH = "/twilio/whisper"
AMD_PATH = "/twilio/amd"
VOICEMAIL_PATH = "/twilio/voicemail"

DEFAULT_WHISPER = "You have a transferred call from the virtual assistant."


class TwiMLTooLarge(ValueError):
    """An answer would exceed Twilio's 64 kB TwiML limit."""


def _render(response: VoiceResponse) -> str:
    xml: str = response.to_xml()
    if len(xml.encode("utf-8")) >= MAX_TWIML_BYTES:
        raise TwiMLTooLarge(f"TwiML answer of {len(xml.encode('utf-8'))} bytes")
    return xml


def shorten(text: str, limit: int = MAX_SAY_CHARS) -> str:
    """``text`` with whitespace collapsed, cut at a word boundary to at most ``limit`` chars."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    head = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return head.rstrip(" ,;:") + "..."


def whisper_url(settings: Settings, call_sid: str) -> str:
    """The ``<Number url>`` that whispers call ``call_sid``'s summary to the human."""
    return public_url_for(settings, WHISPER_PATH) + "?" + urlencode({"sid": call_sid})


def connect_stream(
    settings: Settings, *, call_sid: str, thread_id: str, flow: str, signal: StreamSignal | None = None
) -> str:
    """``<Connect action=stream-ended><Stream url=media>`` with a signed stream token, then
    ``<Hangup/>``. ``signal`` says why a stream restarts (None: a fresh call). Only the token
    is authoritative: the plain flow/thread/signal parameters are for logs and must not be
    trusted by the media session."""
    token = issue_stream_token(
        settings.stream_token_secret.get_secret_value(),
        call_sid=call_sid,
        thread_id=thread_id,
        flow=flow,
        signal=signal,
        ttl_s=settings.stream_token_ttl_s,
    )
    response = VoiceResponse()
    connect = response.connect(action=public_url_for(settings, STREAM_ENDED_PATH))
    stream = connect.stream(url=settings.stream_url, status_callback=public_url_for(settings, STREAM_STATUS_PATH))
    stream.parameter(name="token", value=token)
    stream.parameter(name="flow", value=flow)
    stream.parameter(name="thread", value=thread_id)
    stream.parameter(name="signal", value=str(signal) if signal else "")
    response.hangup()
    return _render(response)


def dial_transfer(
    settings: Settings,
    *,
    target: TransferTarget,
    summary_url: str,
    caller_id: str | None = None,
) -> str:
    """``<Dial>`` a configured human: rings for ``target.timeout_s``, keeps the caller hearing
    ringback until the human answers (answerOnBridge), whispers via ``summary_url`` first, and
    reports the outcome to ``/twilio/dial-ended``. ``caller_id`` must be a number Twilio lets
    this call present (the inbound caller's number, or one of ours)."""
    response = VoiceResponse()
    dial = response.dial(
        action=public_url_for(settings, DIAL_ENDED_PATH),
        answer_on_bridge=True,
        timeout=target.timeout_s,
        caller_id=caller_id or None,
    )
    dial.number(target.number, url=summary_url)
    return _render(response)


def whisper(summary: str | None) -> str:
    """What the human hears before being bridged: the summary, spoken (Say only)."""
    response = VoiceResponse()
    response.say(shorten(summary or "") or DEFAULT_WHISPER)
    return _render(response)


def voicemail_url(settings: Settings, call_sid: str) -> str:
    """The ``<Play>`` URL of call ``call_sid``'s voicemail message (the flow's own voice)."""
    return public_url_for(settings, VOICEMAIL_PATH) + "?" + urlencode({"sid": call_sid})


def play_and_hangup(url: str) -> str:
    """Play the audio at ``url`` (our own, signed-request endpoint), then hang up."""
    response = VoiceResponse()
    response.play(url)
    response.hangup()
    return _render(response)


def say_and_hangup(text: str, *, language: str | None = None) -> str:
    """``<Say>`` then ``<Hangup/>``; ``language`` is Twilio's (``en-US``, ``hi-IN``...)."""
    response = VoiceResponse()
    response.say(shorten(text), language=language)
    response.hangup()
    return _render(response)


def reject(reason: str = "busy") -> str:
    """``<Reject reason>``: the call is refused before it is answered (no charge, the caller
    hears a busy tone for ``busy``, the operator's message for ``rejected``)."""
    response = VoiceResponse()
    response.reject(reason=reason)
    return _render(response)


def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return _render(response)
