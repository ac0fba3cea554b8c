"""The Media Streams protocol object, without an event loop: handshake order, the stream id,
gaps, duplicates and malformed frames, text in and typed events out."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.twilio import codec
from dialgraph.telephony.twilio.protocol import (
    MAX_GAP_FRAMES,
    Gap,
    HandshakeFailed,
    MediaStreamProtocol,
    Rejected,
    StreamState,
)

SID = "MZ" + "1" * 32
OTHER_SID = "MZ" + "2" * 32
CALL = "CA" + "3" * 32
CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(stream_sid: str = SID) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC" + "4" * 32,
                "streamSid": stream_sid,
                "callSid": CALL,
                "tracks": ["inbound"],
                "customParameters": {"token": "t"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        }
    )


def media(chunk: int, ts: int, audio: bytes = SILENCE_FRAME, stream_sid: str = SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(chunk + 1),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(ts),
                "payload": base64.b64encode(audio).decode(),
            },
            "streamSid": stream_sid,
        }
    )


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}})


def stop() -> str:
    return json.dumps(
        {"event": "stop", "sequenceNumber": "99", "streamSid": SID, "stop": {"accountSid": "AC", "callSid": CALL}}
    )


def streaming() -> MediaStreamProtocol:
    protocol = MediaStreamProtocol()
    assert protocol.receive_text(CONNECTED) is None
    assert isinstance(protocol.receive_text(start()), codec.Start)
    return protocol


# --- handshake ------------------------------------------------------------------------------
def test_connected_then_start_opens_the_stream() -> None:
    protocol = MediaStreamProtocol()
    assert protocol.state is StreamState.AWAITING_START
    assert protocol.receive_text(CONNECTED) is None
    event = protocol.receive_text(start())
    assert isinstance(event, codec.Start)
    assert (event.call_sid, event.custom_parameters) == (CALL, {"token": "t"})
    assert (protocol.state, protocol.stream_sid, protocol.start) == (StreamState.STREAMING, SID, event)


def test_start_alone_is_enough_and_connected_may_repeat_within_the_limit() -> None:
    assert isinstance(MediaStreamProtocol().receive_text(start()), codec.Start)
    protocol = MediaStreamProtocol()
    assert [protocol.receive_text(f) for f in (CONNECTED, CONNECTED)] == [None, None]
    assert isinstance(protocol.receive_text(start()), codec.Start)


def test_no_start_within_three_frames_fails_the_handshake() -> None:
    protocol = MediaStreamProtocol()
    events = [protocol.receive_text(CONNECTED) for _ in range(3)]
    assert events[:2] == [None, None]
    assert isinstance(events[2], HandshakeFailed)
    assert protocol.state is StreamState.FAILED
    assert protocol.receive_text(start()) is None  # too late: nothing more is read


def test_anything_but_connected_before_start_fails_the_handshake() -> None:
    for first in (media(1, 0), mark("g1.0"), stop(), "not json", b"\x00binary", '{"event": "start"}'):
        protocol = MediaStreamProtocol()
        assert isinstance(protocol.receive_text(first), HandshakeFailed), first
        assert protocol.state is StreamState.FAILED
        assert protocol.stream_sid == ""


# --- the stream -----------------------------------------------------------------------------
def test_media_passes_through_as_the_codecs_event() -> None:
    protocol = streaming()
    frames = [protocol.receive_text(media(n, (n - 1) * 20, bytes([n]) * 160)) for n in (1, 2, 3)]
    assert all(type(f) is codec.Media for f in frames)
    assert [f.payload[0] for f in frames if isinstance(f, codec.Media)] == [1, 2, 3]
    assert (protocol.frames_in, protocol.duplicates, protocol.silence_frames) == (3, 0, 0)


def test_gaps_by_chunk_and_by_timestamp_are_filled_and_duplicates_dropped() -> None:
    protocol = streaming()
    out = [
        protocol.receive_text(media(1, 0)),
        protocol.receive_text(media(2, 20)),
        protocol.receive_text(media(2, 20)),  # duplicate
        protocol.receive_text(media(5, 80)),  # chunks 3, 4 lost
        protocol.receive_text(media(6, 160)),  # a 60 ms timestamp gap
        protocol.receive_text(media(3, 40)),  # late: dropped
    ]
    assert [type(e).__name__ for e in out] == ["Media", "Media", "NoneType", "Gap", "Gap", "NoneType"]
    gaps = [e for e in out if isinstance(e, Gap)]
    assert [(g.frames, g.media.chunk) for g in gaps] == [(2, 5), (3, 6)]
    assert (protocol.frames_in, protocol.duplicates, protocol.silence_frames) == (4, 2, 5)


def test_a_long_gap_is_filled_with_at_most_five_seconds() -> None:
    protocol = streaming()
    protocol.receive_text(media(1, 0))
    event = protocol.receive_text(media(100_000, 2_000_000))
    assert isinstance(event, Gap) and event.frames == MAX_GAP_FRAMES == 250
    assert protocol.silence_frames == MAX_GAP_FRAMES


def test_media_of_another_stream_and_malformed_frames_are_rejected_and_counted() -> None:
    protocol = streaming()
    bad: list[str | bytes] = [
        media(1, 0, stream_sid=OTHER_SID),
        "{",
        b"\x01\x02",
        '{"event": "hangup"}',
        media(1, 0)[:-5],
    ]
    events = [protocol.receive_text(frame) for frame in bad]
    assert all(isinstance(e, Rejected) for e in events)
    assert [e.count for e in events if isinstance(e, Rejected)] == [1, 2, 3, 4, 5]
    assert isinstance(events[0], Rejected) and str(events[0].error) == "media for another stream"
    assert protocol.protocol_errors == 5
    # None of them moved the stream on: chunk 1 is still new.
    assert type(protocol.receive_text(media(1, 0))) is codec.Media
    assert (protocol.frames_in, protocol.duplicates) == (1, 0)


def test_marks_and_dtmf_pass_through_a_repeated_start_changes_nothing_and_stop_ends_it() -> None:
    protocol = streaming()
    echoed = protocol.receive_text(mark("g1.0"))
    assert isinstance(echoed, codec.Mark) and echoed.name == "g1.0"
    dtmf = json.dumps({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"digit": "7"}})
    pressed = protocol.receive_text(dtmf)
    assert isinstance(pressed, codec.Dtmf) and pressed.digit == "7"
    assert protocol.receive_text(CONNECTED) is None
    assert protocol.receive_text(start(OTHER_SID)) is None
    assert protocol.stream_sid == SID
    assert isinstance(protocol.receive_text(stop()), codec.Stop)
    assert protocol.state is StreamState.STOPPED
    assert protocol.receive_text(media(1, 0)) is None
    assert protocol.frames_in == 0


@given(st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=50), st.sampled_from([CONNECTED, start()]))))
def test_no_frame_sequence_raises_and_the_counters_only_grow(frames: list[str | bytes]) -> None:
    protocol = MediaStreamProtocol()
    seen = (0, 0, 0, 0)
    for frame in [*frames, start(), media(1, 0), *frames, media(3, 40)]:
        protocol.receive_text(frame)
        now = (protocol.frames_in, protocol.duplicates, protocol.silence_frames, protocol.protocol_errors)
        assert all(a <= b for a, b in zip(seen, now, strict=True))
        seen = now
