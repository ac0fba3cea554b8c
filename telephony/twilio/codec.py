"""Twilio Media Streams wire format, Sans-I/O: text in, typed events out; values in, text out.

Nothing here reads, writes, awaits or logs. ``parse`` turns one WebSocket frame from Twilio
into a frozen event; ``media``, ``mark`` and ``clear`` build the only three messages Twilio
accepts from us, with exactly the documented fields (an extra or missing field is rejected
by Twilio with warning 31950/31951).

Errors raised by ``parse``, all subclasses of ``ProtocolError`` (itself a ``ValueError``):

* ``ProtocolError`` -- the frame is not a message Twilio would send
    * ``FrameError`` -- a binary frame, invalid JSON, or JSON that is not an object
    * ``UnknownEvent`` -- ``event`` missing or not one of connected/start/media/dtmf/mark/stop
    * ``FieldError`` -- a field is missing, has the wrong type, or bad base64

Nothing else ever escapes ``parse``, whatever the input (property-tested).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "Connected",
    "Dtmf",
    "FieldError",
    "FrameError",
    "Mark",
    "Media",
    "MediaFormat",
    "ProtocolError",
    "Start",
    "Stop",
    "TwilioEvent",
    "UnknownEvent",
    "clear",
    "mark",
    "media",
    "media_encoder",
    "parse",
]


class ProtocolError(ValueError):
    """A frame that is not a valid Twilio Media Streams message."""


class FrameError(ProtocolError):
    """Binary frame, invalid JSON, or a JSON value that is not an object."""


class UnknownEvent(ProtocolError):
    """``event`` is missing or names no message Twilio sends."""


class FieldError(ProtocolError):
    """A required field is missing or malformed."""


# --- events ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    custom_parameters: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp: int  # ms since the stream began
    payload: bytes  # mu-law 8 kHz, normally 160 bytes (20 ms)


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_sid: str
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


TwilioEvent = Connected | Start | Media | Dtmf | Mark | Stop

DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


# --- field access (each raises FieldError, never KeyError/TypeError) -------------------------
def _obj(msg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = msg.get(key)
    if type(value) is not dict:
        raise FieldError(f"{key!r} must be an object")
    return value


def _str(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    if type(value) is not str:
        raise FieldError(f"{key!r} must be a string")
    return value


def _int(msg: Mapping[str, Any], key: str) -> int:
    """Twilio sends counters as decimal strings; plain JSON integers are accepted too."""
    value = msg.get(key)
    if type(value) is str:
        if 0 < len(value) <= 18 and value.isascii() and value.isdigit():
            return int(value)
    elif type(value) is int and 0 <= value < 10**18:
        return value
    raise FieldError(f"{key!r} must be a non-negative decimal number")


def _parse_connected(msg: Mapping[str, Any]) -> Connected:
    return Connected(protocol=_str(msg, "protocol"), version=_str(msg, "version"))


def _parse_start(msg: Mapping[str, Any]) -> Start:
    start = _obj(msg, "start")
    tracks = start.get("tracks", [])
    if type(tracks) is not list or not all(type(t) is str for t in tracks):
        raise FieldError("'tracks' must be a list of strings")
    params = start.get("customParameters", {})
    if params is None:
        params = {}
    if type(params) is not dict or not all(type(v) is str for v in params.values()):
        raise FieldError("'customParameters' must map names to strings")
    fmt = _obj(start, "mediaFormat")
    return Start(
        sequence_number=_int(msg, "sequenceNumber"),
        stream_sid=_stream_sid(msg, start),
        account_sid=_str(start, "accountSid"),
        call_sid=_str(start, "callSid"),
        tracks=tuple(tracks),
        media_format=MediaFormat(
            encoding=_str(fmt, "encoding"), sample_rate=_int(fmt, "sampleRate"), channels=_int(fmt, "channels")
        ),
        custom_parameters=params,
    )


def _stream_sid(msg: Mapping[str, Any], start: Mapping[str, Any]) -> str:
    sid = msg.get("streamSid", start.get("streamSid"))
    if type(sid) is not str:
        raise FieldError("'streamSid' must be a string")
    return sid


_a2b = binascii.a2b_base64


def _parse_media(msg: Mapping[str, Any]) -> Media:
    media = msg.get("media")
    if type(media) is not dict:
        raise FieldError("'media' must be an object")
    payload = media.get("payload")
    if type(payload) is not str:
        raise FieldError("'payload' must be a string")
    try:
        audio = _a2b(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise FieldError("'payload' is not valid base64") from exc
    track = media.get("track", "inbound")
    if type(track) is not str:
        raise FieldError("'track' must be a string")
    return Media(
        sequence_number=_int(msg, "sequenceNumber"),
        stream_sid=_str(msg, "streamSid"),
        track=track,
        chunk=_int(media, "chunk"),
        timestamp=_int(media, "timestamp"),
        payload=audio,
    )


def _parse_dtmf(msg: Mapping[str, Any]) -> Dtmf:
    dtmf = _obj(msg, "dtmf")
    digit = _str(dtmf, "digit")
    if len(digit) != 1 or digit not in DTMF_DIGITS:
        raise FieldError("'digit' must be one DTMF key")
    track = dtmf.get("track", "inbound_track")
    if type(track) is not str:
        raise FieldError("'track' must be a string")
    return Dtmf(
        sequence_number=_int(msg, "sequenceNumber"),
        stream_sid=_str(msg, "streamSid"),
        track=track,
        digit=digit,
    )


def _parse_mark(msg: Mapping[str, Any]) -> Mark:
    return Mark(
        sequence_number=_int(msg, "sequenceNumber"),
        stream_sid=_str(msg, "streamSid"),
        name=_str(_obj(msg, "mark"), "name"),
    )


def _parse_stop(msg: Mapping[str, Any]) -> Stop:
    stop = _obj(msg, "stop")
    return Stop(
        sequence_number=_int(msg, "sequenceNumber"),
        stream_sid=_str(msg, "streamSid"),
        account_sid=_str(stop, "accountSid"),
        call_sid=_str(stop, "callSid"),
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any]], TwilioEvent]] = {
    "media": _parse_media,
    "mark": _parse_mark,
    "dtmf": _parse_dtmf,
    "start": _parse_start,
    "connected": _parse_connected,
    "stop": _parse_stop,
}

_loads = json.loads

# The fast path for the one message that comes 50 times a second per call: a ``media``
# frame serialized the way Twilio does (its documented key order, no whitespace, no
# escapes). It accepts only strings the full parser would decode to the same values (JSON
# strings without escapes or control characters, counters of 1-18 ASCII digits), so it
# is a shortcut, never a second grammar; anything else takes the full parser.
_STR = r'([^"\\\x00-\x1f]*)'
_NUM = r"([0-9]{1,18})"
_MEDIA_SHAPE = (
    r'\{"event":"media","sequenceNumber":"NUM","media":\{"track":"STR","chunk":"NUM",'
    r'"timestamp":"NUM","payload":"([A-Za-z0-9+/=]*)"\},"streamSid":"STR"\}'
)
_MEDIA_FAST = re.compile(_MEDIA_SHAPE.replace("NUM", _NUM).replace("STR", _STR)).fullmatch


def parse(frame: str | bytes) -> TwilioEvent:
    """One WebSocket frame from Twilio -> its event. Raises only ``ProtocolError``."""
    if type(frame) is not str:
        raise FrameError("binary frame: Twilio sends JSON text frames")
    fast = _MEDIA_FAST(frame)
    if fast is not None:
        seq, track, chunk, timestamp, payload, stream_sid = fast.groups()
        try:
            audio = _a2b(payload, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise FieldError("'payload' is not valid base64") from exc
        return Media(int(seq), stream_sid, track, int(chunk), int(timestamp), audio)
    try:
        msg = _loads(frame)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FrameError("frame is not valid JSON") from exc
    if type(msg) is not dict:
        raise FrameError("frame is not a JSON object")
    event = msg.get("event")
    parser = _PARSERS.get(event) if type(event) is str else None
    if parser is None:
        raise UnknownEvent("unknown or missing 'event'")
    return parser(msg)


# --- builders (the only three messages Twilio accepts) --------------------------------------
@lru_cache(maxsize=4096)
def _quoted(value: str) -> str:
    return json.dumps(value)


_b2a = binascii.b2a_base64


def media(stream_sid: str, audio: bytes | bytearray | memoryview) -> str:
    """``{"event":"media","streamSid":S,"media":{"payload":B64}}`` for raw 8 kHz mu-law."""
    return (
        '{"event":"media","streamSid":'
        + _quoted(stream_sid)
        + ',"media":{"payload":"'
        + _b2a(audio, newline=False).decode("ascii")
        + '"}}'
    )


def media_encoder(stream_sid: str) -> Callable[[bytes | bytearray | memoryview], str]:
    """``media`` for one stream with its JSON prefix built once (the writer's hot path)."""
    prefix = '{"event":"media","streamSid":' + json.dumps(stream_sid) + ',"media":{"payload":"'

    def encode(audio: bytes | bytearray | memoryview) -> str:
        return prefix + _b2a(audio, newline=False).decode("ascii") + '"}}'

    return encode


def mark(stream_sid: str, name: str) -> str:
    """``{"event":"mark","streamSid":S,"mark":{"name":N}}``: echoed once the audio before it played."""
    return '{"event":"mark","streamSid":' + _quoted(stream_sid) + ',"mark":{"name":' + json.dumps(name) + "}}"


def clear(stream_sid: str) -> str:
    """``{"event":"clear","streamSid":S}``: drop buffered audio; Twilio returns pending marks."""
    return '{"event":"clear","streamSid":' + _quoted(stream_sid) + "}"
