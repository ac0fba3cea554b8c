"""TwiML builders: exact structure, parsed back with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydantic import SecretStr

from dialgraph.server.core.enums import SignalKind, StreamSignal
from dialgraph.server.core.flow_config import TransferTarget
from dialgraph.server.core.security import verify_stream_token
from dialgraph.server.core.settings import Settings
from dialgraph.telephony.twilio import twiml


@pytest.fixture
def public_settings(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        public_url="https://voice.example.com/",
        stream_token_secret=SecretStr("stream-secret-for-tests"),
        _env_file=None,
    )


def _children(element: ET.Element) -> list[str]:
    return [child.tag for child in element]


def test_connect_stream(public_settings: Settings) -> None:
    xml = twiml.connect_stream(
        public_settings,
        call_sid="CA1",
        thread_id="CA0",
        flow="support",
        signal=StreamSignal(SignalKind.TRANSFER_FAILED, "busy"),
    )
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    assert _children(root) == ["Connect", "Hangup"]
    connect = root[0]
    assert connect.attrib == {"action": "https://voice.example.com/twilio/stream-ended"}
    assert _children(connect) == ["Stream"]
    stream = connect[0]
    assert stream.attrib == {
        "url": "wss://voice.example.com/twilio/media",
        "statusCallback": "https://voice.example.com/twilio/stream-status",
    }
    params = {p.attrib["name"]: p.attrib["value"] for p in stream}
    assert _children(stream) == ["Parameter"] * 4
    assert set(params) == {"token", "flow", "thread", "signal"}
    assert (params["flow"], params["thread"], params["signal"]) == ("support", "CA0", "transfer_failed:busy")
    assert all(len(v) < 500 for v in params.values())
    claims = verify_stream_token("stream-secret-for-tests", params["token"])
    assert (claims.call_sid, claims.thread_id, claims.flow, claims.signal) == (
        "CA1",
        "CA0",
        "support",
        "transfer_failed:busy",
    )
    assert "?" not in stream.attrib["url"]


def test_dial_transfer(public_settings: Settings) -> None:
    target = TransferTarget(number="+15550100002", timeout_s=25)
    xml = twiml.dial_transfer(
        public_settings,
        target=target,
        summary_url=twiml.whisper_url(public_settings, "CA1"),
        caller_id="+14155550100",
    )
    root = ET.fromstring(xml)
    assert _children(root) == ["Dial"]
    dial = root[0]
    assert dial.attrib == {
        "action": "https://voice.example.com/twilio/dial-ended",
        "answerOnBridge": "true",
        "timeout": "25",
        "callerId": "+14155550100",
    }
    assert _children(dial) == ["Number"]
    assert dial[0].attrib == {"url": "https://voice.example.com/twilio/whisper?sid=CA1"}
    assert dial[0].text == "+15550100002"


def test_dial_without_caller_id(public_settings: Settings) -> None:
    xml = twiml.dial_transfer(public_settings, target=TransferTarget(number="+15550100002"), summary_url="https://w/")
    assert "callerId" not in ET.fromstring(xml)[0].attrib


def test_whisper_say_only_and_escaped() -> None:
    root = ET.fromstring(twiml.whisper("Ann <Smith> & co wants a refund"))
    assert _children(root) == ["Say"]
    assert root[0].text == "Ann <Smith> & co wants a refund"
    assert ET.fromstring(twiml.whisper(None))[0].text == twiml.DEFAULT_WHISPER
    assert ET.fromstring(twiml.whisper("   "))[0].text == twiml.DEFAULT_WHISPER


def test_huge_summary_is_truncated_under_64k() -> None:
    summary = "blah " * 100_000
    xml = twiml.whisper(summary)
    assert len(xml.encode()) < 64_000
    said = ET.fromstring(xml)[0].text or ""
    assert len(said) <= twiml.MAX_SAY_CHARS and said.endswith("...")
    assert said.startswith("blah blah")


def test_say_and_hangup_and_hangup() -> None:
    root = ET.fromstring(twiml.say_and_hangup("Goodbye."))
    assert _children(root) == ["Say", "Hangup"]
    assert root[0].text == "Goodbye."
    assert _children(ET.fromstring(twiml.hangup())) == ["Hangup"]


def test_shorten() -> None:
    assert twiml.shorten("  a \n b  ") == "a b"
    assert twiml.shorten("one two three four", 12) == "one two..."
    assert twiml.shorten("x" * 50, 10) == "x" * 7 + "..."
