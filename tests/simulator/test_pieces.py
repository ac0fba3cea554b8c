"""The simulator's pure parts: TwiML, scenarios, signatures, playback model, expectations."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dialgraph.server.core.security import is_valid_twilio_signature, ws_signature_ok
from dialgraph.telephony.simulator.caller import Recorder, to_frames
from dialgraph.telephony.simulator.expect import appointment_matches, parse_local_spec
from dialgraph.telephony.simulator.protocol import ClearOut, MarkOut, MediaOut, PlaybackBuffer, check_server_message
from dialgraph.telephony.simulator.report import agent_segments, percentile
from dialgraph.telephony.simulator.scenario import (
    AppointmentExpectation,
    BargeIn,
    Dtmf,
    Hangup,
    ScenarioError,
    Transfer,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)
from dialgraph.telephony.simulator.twiml import (
    ConnectVerb,
    DialVerb,
    HangupVerb,
    SayVerb,
    TwimlError,
    Unsupported,
    parse_twiml,
)
from dialgraph.telephony.simulator.webhooks import TwilioWebhooks
from dialgraph.telephony.twilio import twiml


def test_server_twiml_parses_into_verbs() -> None:
    from dialgraph.server.core.settings import Settings

    s = Settings(public_url="https://calls.example.com", _env_file=None)  # type: ignore[call-arg]
    verbs = parse_twiml(twiml.connect_stream(s, call_sid="CA1", thread_id="CA1", flow="sales"), base_url=s.public_url)
    connect, hangup = verbs
    assert isinstance(connect, ConnectVerb) and isinstance(hangup, HangupVerb)
    assert connect.action == "https://calls.example.com/twilio/stream-ended"
    assert connect.stream is not None and connect.stream.url == "wss://calls.example.com/twilio/media"
    assert set(connect.stream.parameters) == {"token", "flow", "thread", "signal"}
    target = s.flows["scheduling"].transfer_targets["front_desk"]
    (dial,) = parse_twiml(
        twiml.dial_transfer(s, target=target, summary_url="https://calls.example.com/w?sid=CA1"),
        base_url=s.public_url,
    )
    assert isinstance(dial, DialVerb)
    assert (dial.number, dial.answer_on_bridge, dial.timeout_s) == ("+15550100001", True, target.timeout_s)
    assert dial.whisper_url == "https://calls.example.com/w?sid=CA1"
    assert dial.action == "https://calls.example.com/twilio/dial-ended"


def test_twiml_edge_cases() -> None:
    verbs = parse_twiml("<Response><Say>Hi</Say><Gather/><Dial>+15551234567</Dial></Response>", base_url="http://x/")
    assert verbs[0] == SayVerb("Hi") and verbs[1] == Unsupported("Gather")
    assert isinstance(verbs[2], DialVerb) and verbs[2].number == "+15551234567"
    with pytest.raises(TwimlError):
        parse_twiml("<html/>", base_url="http://x/")
    with pytest.raises(TwimlError):
        parse_twiml("<Response><Say>", base_url="http://x/")
    with pytest.raises(TwimlError):
        parse_twiml("<Response>" + "<Pause/>" * 20000 + "</Response>", base_url="http://x/")


def test_signatures_are_what_the_server_accepts() -> None:
    hooks = TwilioWebhooks(base_url="https://calls.example.com", auth_token="tok")
    params = {"CallSid": "CA1", "From": "+15551230001", "To": "+15550001001"}
    url = "https://calls.example.com/twilio/voice"
    assert is_valid_twilio_signature("tok", url, params, hooks.signature(url, params))
    assert not is_valid_twilio_signature("other", url, params, hooks.signature(url, params))
    ws = "wss://calls.example.com/twilio/media"
    assert ws_signature_ok("tok", "https://calls.example.com", "/twilio/media", hooks.signature(ws))


def test_playback_buffer_models_twilio() -> None:
    buf = PlaybackBuffer()
    assert buf.enqueue_mark("idle", now=0.0) is True  # nothing queued: back at once
    assert buf.enqueue_audio(8000, now=1.0) == 1.0  # 1 s of audio from t=1
    assert buf.enqueue_audio(4000, now=1.2) == 2.0  # queued behind it
    assert buf.enqueue_mark("a", now=1.2) is False
    assert buf.due(2.4) == []
    assert buf.due(2.5) == ["a"]
    buf.enqueue_audio(8000, now=3.0)
    buf.enqueue_mark("b", now=3.0)
    buf.enqueue_audio(8000, now=3.0)
    buf.enqueue_mark("c", now=3.0)
    marks, cut_end = buf.clear(now=3.5)
    assert marks == ["b", "c"] and cut_end == 5.0
    assert buf.idle(3.5) and buf.enqueue_mark("d", now=3.5) is True


@pytest.mark.parametrize(
    ("message", "ok"),
    [
        ({"event": "media", "streamSid": "MZ1", "media": {"payload": "/w=="}}, MediaOut(b"\xff")),
        ({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m"}}, MarkOut("m")),
        ({"event": "clear", "streamSid": "MZ1"}, ClearOut()),
        ({"event": "clear", "streamSid": "MZ2"}, None),
        ({"event": "clear"}, None),
        ({"event": "media", "streamSid": "MZ1", "media": {"payload": "/w==", "track": "outbound"}}, None),
        ({"event": "media", "streamSid": "MZ1", "media": {"payload": ""}}, None),
        ({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m"}, "sequenceNumber": "1"}, None),
        ({"event": "stop", "streamSid": "MZ1"}, None),
        ([1, 2], None),
    ],
)
def test_only_the_three_documented_messages_pass(message: object, ok: object) -> None:
    result = check_server_message(json.dumps(message), "MZ1")
    if ok is None:
        assert isinstance(result, str)
    else:
        assert result == ok
    assert isinstance(check_server_message(b"\x00", "MZ1"), str)
    assert isinstance(check_server_message(json.dumps({"event": "clear", "streamSid": "MZ1"}), None), str)


def test_scenarios_parse_and_fail_loudly() -> None:
    assert {"scheduling_demo", "support_basic", "sales_basic"} <= set(shipped_scenarios())
    demo = load_scenario("scheduling_demo")
    assert demo.expect.transfer_to == "front_desk" and demo.expect.message_left is True
    assert any(isinstance(s, Transfer) and not s.answer for s in demo.steps)
    s = parse_scenario(
        {"steps": [{"barge_in": "stop"}, {"dtmf": "0#"}, "hangup"], "expect": {"agent_said": ["(?i)hello"]}}
    )
    assert s.steps == (BargeIn("stop"), Dtmf("0#"), Hangup())
    for bad in (
        {"steps": []},
        {"steps": [{"sing": "la"}]},
        {"steps": [{"dtmf": "x"}]},
        {"steps": [{"say": "a"}], "expect": {"nonsense": 1}},
        {"steps": [{"say": "a"}], "expect": {"agent_said": ["("]}},
        {"steps": [{"transfer": {"status": "maybe"}}]},
    ):
        with pytest.raises(ScenarioError):
            parse_scenario(bad)
    with pytest.raises(ScenarioError):
        load_scenario("no_such_scenario")


def test_local_time_expectations() -> None:
    assert parse_local_spec("tuesday 2:30 pm") == (None, 1, dt.time(14, 30))
    assert parse_local_spec("14:30") == (None, None, dt.time(14, 30))
    assert parse_local_spec("2026-12-01T14:30")[0] == dt.datetime(2026, 12, 1, 14, 30)
    starts = dt.datetime(2026, 12, 1, 19, 30, tzinfo=dt.UTC)  # 14:30 in New York
    assert appointment_matches(starts, AppointmentExpectation("tue 14:30", "America/New_York"))
    assert not appointment_matches(starts, AppointmentExpectation("tue 14:30", "UTC"))
    assert not appointment_matches(starts, AppointmentExpectation("wednesday 14:30", "America/New_York"))
    assert appointment_matches(starts, AppointmentExpectation("2026-12-01T14:30", "America/New_York"))
    with pytest.raises(ValueError):
        parse_local_spec("whenever")


def test_agent_turns_are_cut_at_caller_lines_and_clears() -> None:
    rec = Recorder()
    loud = b"\x00\x80" * 80
    rec.add_agent(0.0, loud * 50)  # 1 s of speech from t=0
    rec.add_agent(0.0, loud * 25)  # queued: plays 1.0-1.5 s
    rec.add_agent(3.0, loud * 50)  # a reply at 3 s
    rec.cut_agent(3.5)  # a clear half-way through it
    segments = agent_segments(bytes(rec.agent), [0.0, 2.0, 3.5])
    assert [(round(s.start, 2), round(s.end, 2)) for s in segments] == [(0.0, 1.52), (2.98, 3.5)]  # one frame of margin
    assert to_frames(b"\x01" * 170)[1] == b"\x01" * 10 + b"\xff" * 150
    assert percentile([1, 2, 3, 4, 100], 50) == 3
