"""The Media Streams codec against Twilio's documented messages, and against garbage."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialgraph.telephony.twilio import codec

STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA" + "0" * 32
ACCOUNT = "AC" + "1" * 32
AUDIO = bytes(range(160))
PAYLOAD = base64.b64encode(AUDIO).decode()

# The examples of https://www.twilio.com/docs/voice/media-streams/websocket-messages, with
# their key order (which varies between messages) and real-looking values.
CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": STREAM,
            "callSid": CALL,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        },
        "streamSid": STREAM,
    }
)
MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "3",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD},
        "streamSid": STREAM,
    }
)
DTMF = json.dumps(
    {"event": "dtmf", "streamSid": STREAM, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}}
)
MARK = json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": STREAM, "mark": {"name": "my label"}})
STOP = json.dumps(
    {"event": "stop", "sequenceNumber": "5", "streamSid": STREAM, "stop": {"accountSid": ACCOUNT, "callSid": CALL}}
)


def test_documented_messages_parse_to_typed_events() -> None:
    assert codec.parse(CONNECTED) == codec.Connected(protocol="Call", version="1.0.0")
    start = codec.parse(START)
    assert isinstance(start, codec.Start)
    assert (start.sequence_number, start.stream_sid, start.call_sid, start.account_sid) == (1, STREAM, CALL, ACCOUNT)
    assert start.tracks == ("inbound",)
    assert start.media_format == codec.MediaFormat("audio/x-mulaw", 8000, 1)
    assert start.custom_parameters == {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}
    assert codec.parse(MEDIA) == codec.Media(3, STREAM, "inbound", 1, 5, AUDIO)
    assert codec.parse(DTMF) == codec.Dtmf(5, STREAM, "inbound_track", "1")
    assert codec.parse(MARK) == codec.Mark(4, STREAM, "my label")
    assert codec.parse(STOP) == codec.Stop(5, STREAM, ACCOUNT, CALL)


def test_key_order_and_extra_fields_do_not_matter() -> None:
    msg = json.loads(MEDIA)
    shuffled = {"streamSid": msg["streamSid"], "extra": [1, 2], **dict(reversed(list(msg.items())))}
    shuffled["media"] = {"future": True, **dict(reversed(list(msg["media"].items())))}
    assert codec.parse(json.dumps(shuffled)) == codec.parse(MEDIA)


def test_events_are_frozen() -> None:
    event = codec.parse(MARK)
    with pytest.raises(AttributeError):
        event.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (MEDIA.encode(), codec.FrameError),  # binary frame
        ("{not json", codec.FrameError),
        ("[1, 2]", codec.FrameError),
        ('"media"', codec.FrameError),
        ('{"event": "hangup"}', codec.UnknownEvent),
        ('{"event": 7}', codec.UnknownEvent),
        ("{}", codec.UnknownEvent),
        (MEDIA.replace(PAYLOAD, "not base64!"), codec.FieldError),
        (MEDIA.replace('"chunk": "1"', '"chunk": "one"'), codec.FieldError),
        (MEDIA.replace('"chunk": "1"', '"chunk": "-1"'), codec.FieldError),
        (MEDIA.replace('"chunk": "1"', '"chunk": true'), codec.FieldError),
        (MEDIA.replace('"sequenceNumber": "3", ', ""), codec.FieldError),
        (MEDIA.replace(f'"streamSid": "{STREAM}"', '"streamSid": null'), codec.FieldError),
        (DTMF.replace('"digit": "1"', '"digit": "12"'), codec.FieldError),
        (DTMF.replace('"digit": "1"', '"digit": "x"'), codec.FieldError),
        (MARK.replace('"name": "my label"', '"name": 3'), codec.FieldError),
        (STOP.replace(f'"callSid": "{CALL}"', '"callSid": ["x"]'), codec.FieldError),
        (START.replace('"tracks": ["inbound"]', '"tracks": "inbound"'), codec.FieldError),
        (START.replace('"RemoteParty": "Bob"', '"RemoteParty": 1'), codec.FieldError),
        ("[" * 100_000 + "]" * 100_000, codec.FrameError),  # recursion depth
    ],
)
def test_malformed_frames_raise_the_typed_error(frame: str | bytes, error: type[codec.ProtocolError]) -> None:
    with pytest.raises(error):
        codec.parse(frame)


def test_error_tree() -> None:
    for cls in (codec.FrameError, codec.UnknownEvent, codec.FieldError):
        assert issubclass(cls, codec.ProtocolError)
    assert issubclass(codec.ProtocolError, ValueError)


def test_builders_emit_exactly_the_documented_fields() -> None:
    assert json.loads(codec.media(STREAM, AUDIO)) == {
        "event": "media",
        "streamSid": STREAM,
        "media": {"payload": PAYLOAD},
    }
    assert json.loads(codec.mark(STREAM, "g1.0")) == {"event": "mark", "streamSid": STREAM, "mark": {"name": "g1.0"}}
    assert json.loads(codec.clear(STREAM)) == {"event": "clear", "streamSid": STREAM}
    # Names are escaped, not spliced: a quote cannot add fields.
    assert json.loads(codec.mark(STREAM, 'a","x":"y')) == {
        "event": "mark",
        "streamSid": STREAM,
        "mark": {"name": 'a","x":"y'},
    }


@given(st.binary(max_size=2000))
def test_media_payload_round_trips(audio: bytes) -> None:
    out = json.loads(codec.media(STREAM, audio))
    assert base64.b64decode(out["media"]["payload"], validate=True) == audio


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(
    ["event", "sequenceNumber", "streamSid", "media", "start", "mark", "dtmf", "stop", "payload", "chunk", "timestamp"]
)
events = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", ""])
twilio_like = st.fixed_dictionaries(
    {"event": events},
    optional={
        "sequenceNumber": st.one_of(st.text(max_size=5), st.integers(), json_values),
        "streamSid": json_values,
        "media": st.dictionaries(st.sampled_from(["track", "chunk", "timestamp", "payload"]), json_values | st.text()),
        "start": st.dictionaries(keys | st.text(max_size=5), json_values),
        "mark": st.dictionaries(st.just("name"), json_values),
        "dtmf": st.dictionaries(st.sampled_from(["digit", "track"]), json_values),
        "stop": st.dictionaries(st.sampled_from(["accountSid", "callSid"]), json_values),
    },
)


def _only_protocol_errors(frame: str | bytes) -> None:
    try:
        event = codec.parse(frame)
    except codec.ProtocolError:
        return
    assert isinstance(event, codec.Connected | codec.Start | codec.Media | codec.Dtmf | codec.Mark | codec.Stop)


@settings(max_examples=400)
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_garbage_raises_only_protocol_error(frame: str | bytes) -> None:
    _only_protocol_errors(frame)


@settings(max_examples=600)
@given(twilio_like)
def test_near_miss_messages_raise_only_protocol_error(msg: dict[str, object]) -> None:
    _only_protocol_errors(json.dumps(msg))


@settings(max_examples=300)
@given(st.data())
def test_mutated_documented_messages_raise_only_protocol_error(data: st.DataObject) -> None:
    frame = data.draw(st.sampled_from([CONNECTED, START, MEDIA, DTMF, MARK, STOP]))
    pos = data.draw(st.integers(0, len(frame)))
    junk = data.draw(st.text(max_size=4))
    cut = data.draw(st.integers(0, 3))
    _only_protocol_errors(frame[:pos] + junk + frame[pos + cut :])
