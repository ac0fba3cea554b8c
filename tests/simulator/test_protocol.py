"""Twilio's side of a stream, Sans-I/O: messages the server's codec reads as Twilio's, the
server's messages played as Twilio plays them; and the lean client's WebSocket framing."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from dialgraph.server.core.security import ws_signature_ok
from dialgraph.telephony.simulator.lean import CLOSE_FRAME, FrameSocket, client_frame
from dialgraph.telephony.simulator.protocol import (
    SILENCE_PAYLOAD,
    AgentAudio,
    AgentClear,
    AgentMark,
    TwilioProtocol,
    Violation,
    payload,
)
from dialgraph.telephony.simulator.twiml import stream_parameters
from dialgraph.telephony.simulator.webhooks import call_params, new_call_sid, stream_signature
from dialgraph.telephony.twilio import codec

STREAM = "MZ" + "1" * 32
CALL = "CA" + "2" * 32


def server_says(event: str, **body: object) -> str:
    return json.dumps({"event": event, "streamSid": STREAM, **body})


def test_every_message_is_one_the_server_reads_as_twilios() -> None:
    twilio = TwilioProtocol(stream_sid=STREAM, call_sid=CALL, account_sid="AC9")
    assert codec.parse(twilio.connected()) == codec.Connected("Call", "1.0.0")
    start = codec.parse(twilio.start({"token": "t", "flow": "support"}))
    assert isinstance(start, codec.Start)
    assert (start.sequence_number, start.stream_sid, start.call_sid, start.account_sid) == (1, STREAM, CALL, "AC9")
    assert dict(start.custom_parameters) == {"token": "t", "flow": "support"}
    assert start.media_format == codec.MediaFormat("audio/x-mulaw", 8000, 1)
    frames = [codec.parse(twilio.media(payload(bytes([n]) * 160))) for n in range(3)]
    assert [(m.sequence_number, m.chunk, m.timestamp, m.payload) for m in frames] == [  # type: ignore[union-attr]
        (2, 1, 0, b"\x00" * 160),
        (3, 2, 20, b"\x01" * 160),
        (4, 3, 40, b"\x02" * 160),
    ]
    late = codec.parse(twilio.media(SILENCE_PAYLOAD, chunk=2, timestamp=20))
    assert (late.sequence_number, late.chunk, late.timestamp) == (5, 2, 20)  # type: ignore[union-attr]
    assert codec.parse(twilio.dtmf("7")) == codec.Dtmf(6, STREAM, "inbound_track", "7")
    assert codec.parse(twilio.mark("g1.0")) == codec.Mark(7, STREAM, "g1.0")
    assert codec.parse(twilio.stop()) == codec.Stop(8, STREAM, "AC9", CALL)
    assert (twilio.stats.frames_out, twilio.stats.marks_echoed) == (4, 1)


def test_media_is_serialized_exactly_as_twilio_does() -> None:
    twilio = TwilioProtocol(stream_sid=STREAM, call_sid=CALL)
    twilio.start({})
    assert twilio.media(SILENCE_PAYLOAD) == (
        '{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"0",'
        f'"payload":"{SILENCE_PAYLOAD}"}},"streamSid":"{STREAM}"}}'
    )


def test_the_servers_messages_are_played_and_marks_echoed_when_heard() -> None:
    twilio = TwilioProtocol(stream_sid=STREAM, call_sid=CALL)
    assert twilio.receive(server_says("mark", mark={"name": "idle"}), now=0.0) == AgentMark("idle", due_now=True)
    assert twilio.echo_waiting
    assert [json.loads(m)["mark"] for m in twilio.echoes(0.0)] == [{"name": "idle"}]
    one_second = payload(b"\x00" * 8000)
    audio = twilio.receive(server_says("media", media={"payload": one_second}), now=1.0)
    assert audio == AgentAudio(b"\x00" * 8000, starts=1.0, dry_s=1.0)  # the buffer was dry for 1 s
    queued = twilio.receive(server_says("media", media={"payload": one_second}), now=1.5)
    assert isinstance(queued, AgentAudio) and (queued.starts, queued.dry_s) == (2.0, 0.0)
    assert twilio.receive(server_says("mark", mark={"name": "a"}), now=1.5) == AgentMark("a", due_now=False)
    assert not twilio.echo_waiting and twilio.echoes(2.9) == []
    assert [json.loads(m)["mark"]["name"] for m in twilio.echoes(3.0)] == ["a"]
    twilio.receive(server_says("media", media={"payload": one_second}), now=3.0)
    twilio.receive(server_says("mark", mark={"name": "b"}), now=3.0)
    assert twilio.receive(server_says("clear"), now=3.2) == AgentClear(returned=1, cut_end=4.0)
    assert [json.loads(m)["mark"]["name"] for m in twilio.echoes(3.2)] == ["b"]  # at once, unheard
    stats = twilio.stats
    assert (stats.media_in, stats.marks_in, stats.clears, stats.marks_returned_by_clear) == (3, 3, 1, 1)


def test_what_twilio_would_reject_is_a_violation_and_plays_nothing() -> None:
    twilio = TwilioProtocol(stream_sid=STREAM, call_sid=CALL)
    wrong = json.dumps({"event": "clear", "streamSid": "MZother"})
    result = twilio.receive(wrong, now=2.0)
    assert isinstance(result, Violation) and (result.at, result.raw) == (2.0, wrong)
    assert isinstance(twilio.receive(b"\x00\x01", now=2.0), Violation)
    assert isinstance(twilio.receive(json.dumps({"event": ["media"], "streamSid": STREAM}), now=2.0), Violation)
    assert twilio.stats.clears == 0 and twilio.playback.idle(2.0)


def test_webhook_and_handshake_helpers_sign_and_read_what_the_server_does() -> None:
    signature = stream_signature("tok", "https://voice.example.com")
    assert ws_signature_ok("tok", "https://voice.example.com", "/twilio/media", signature)
    assert not ws_signature_ok("other", "https://voice.example.com", "/twilio/media", signature)
    twiml = (
        '<Response><Connect action="/twilio/stream-ended"><Stream url="wss://h/twilio/media">'
        '<Parameter name="token" value="abc"/><Parameter name="signal" value="reconnected"/>'
        "</Stream></Connect><Hangup/></Response>"
    )
    assert stream_parameters(twiml) == {"token": "abc", "signal": "reconnected"}
    assert stream_parameters("<Response><Hangup/></Response>") == {}
    sid = new_call_sid()
    assert sid.startswith("CA") and len(sid) == 34
    params = call_params(sid, from_number="+15551230001", status="ringing", Extra="x")
    assert (params["CallSid"], params["From"], params["Caller"], params["CallStatus"]) == (
        sid,
        "+15551230001",
        "+15551230001",
        "ringing",
    )
    assert params["Extra"] == "x" and params["ApiVersion"] == "2010-04-01"


def server_frame(opcode: int, data: bytes) -> bytes:
    """An unmasked frame, as a server sends it."""
    n = len(data)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + data
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + data
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + data


def test_client_frames_are_masked_with_a_zero_key() -> None:
    for size in (0, 125, 126, 65535, 65536):
        frame = client_frame("x" * size)
        head = {0: 2, 125: 2, 126: 4, 65535: 4, 65536: 10}[size]
        assert frame[0] == 0x81 and frame[1] & 0x80
        assert frame[head : head + 4] == b"\0\0\0\0" and frame[head + 4 :] == b"x" * size
    assert CLOSE_FRAME[0] == 0x88


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


async def test_frame_socket_reads_split_frames_and_answers_a_close() -> None:
    texts: list[str] = []
    sock = FrameSocket(lambda text, now: texts.append(text))
    transport = Transport()
    sock.connection_made(transport)
    long_text = "y" * 300
    data = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        + server_frame(1, b"hello")
        + server_frame(1, long_text.encode())
        + server_frame(8, struct.pack("!H", 1000))
    )
    for i in range(0, len(data), 7):  # TCP may cut anywhere
        sock.data_received(data[i : i + 7])
    await sock.opened
    assert texts == ["hello", long_text]
    assert bytes(transport.written) == CLOSE_FRAME and transport.closing
    sock.connection_lost(None)
    await sock.closed


async def test_frame_socket_refused_upgrade_fails_the_open() -> None:
    sock = FrameSocket(lambda text, now: None)
    sock.connection_made(Transport())
    sock.data_received(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
    with pytest.raises(ConnectionError, match="403"):
        await sock.opened
