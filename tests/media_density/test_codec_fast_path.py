"""The codec's fast path for ``media`` frames is a shortcut, never a second grammar: on
any input it returns what the full parser returns, or raises the same error class."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from dialgraph.telephony.twilio import codec

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
# Twilio's documented example, serialized as Twilio sends it (compact, its key order).
EXAMPLE = (
    '{"event":"media","sequenceNumber":"3","media":{"track":"outbound","chunk":"1","timestamp":"5",'
    '"payload":"no+JhoaJjpzSHxAKBgYJDhtEopGKh4aIjZm7JhILBwYIDBc0qZaMiIaHi5SsLhQNCAYHChEkzJ2PiYaGiZGh"},'
    '"streamSid":"' + SID + '"}'
)


def reference(frame: str) -> codec.TwilioEvent | type[codec.ProtocolError]:
    """The full parser alone (json.loads + field checks), or the error class it raises."""
    try:
        msg = json.loads(frame)
        if type(msg) is not dict or msg.get("event") != "media":
            return codec.parse(frame)
        return codec._parse_media(msg)
    except codec.ProtocolError as exc:
        return type(exc)
    except ValueError:
        return codec.FrameError


def outcome(frame: str) -> codec.TwilioEvent | type[codec.ProtocolError]:
    try:
        return codec.parse(frame)
    except codec.ProtocolError as exc:
        return type(exc)


def test_twilios_example_takes_the_fast_path_and_parses_as_the_full_parser_does() -> None:
    assert codec._MEDIA_FAST(EXAMPLE) is not None
    event = codec.parse(EXAMPLE)
    assert event == reference(EXAMPLE)
    assert isinstance(event, codec.Media)
    assert (event.sequence_number, event.stream_sid, event.track, event.chunk, event.timestamp) == (
        3,
        SID,
        "outbound",
        1,
        5,
    )


def test_bad_base64_on_the_fast_path_is_a_field_error() -> None:
    frame = EXAMPLE.replace('"payload":"no+J', '"payload":"no+J=')
    assert codec._MEDIA_FAST(frame) is not None
    assert outcome(frame) is codec.FieldError


def media_frame(seq: int, track: str, chunk: int, ts: int, payload: bytes, sid: str, *, ascii_only: bool) -> str:
    media = {"track": track, "chunk": str(chunk), "timestamp": str(ts), "payload": base64.b64encode(payload).decode()}
    msg = {"event": "media", "sequenceNumber": str(seq), "media": media, "streamSid": sid}
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=ascii_only)


counters = st.integers(min_value=0, max_value=10**19)


@given(counters, st.text(max_size=12), counters, counters, st.binary(max_size=400), st.text(max_size=40), st.booleans())
def test_any_twilio_shaped_frame_parses_the_same_either_way(
    seq: int, track: str, chunk: int, ts: int, payload: bytes, sid: str, ascii_only: bool
) -> None:
    frame = media_frame(seq, track, chunk, ts, payload, sid, ascii_only=ascii_only)
    assert outcome(frame) == reference(frame)


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=400), st.text(max_size=3), st.integers(0, 3))
def test_mutated_frames_parse_or_fail_the_same_either_way(payload: bytes, at: int, insert: str, cut: int) -> None:
    frame = media_frame(7, "inbound", 2, 20, payload, SID, ascii_only=True)
    at = min(at, len(frame))
    mutated = frame[:at] + insert + frame[at + cut :]
    assert outcome(mutated) == reference(mutated)
