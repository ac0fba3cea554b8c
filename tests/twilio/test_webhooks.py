"""Twilio webhooks through the whole app, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dialgraph.server.core.call_store import get_call, record_call, transcript, update_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call
from dialgraph.server.core.security import verify_stream_token
from dialgraph.telephony.simulator.webhooks import call_params, new_call_sid
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.twilio.conftest import CALLER, PUBLIC_URL, STREAM_SECRET, SUPPORT_NUMBER, TwilioApp, make_settings, start_app


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def stream_of(root: ET.Element) -> dict[str, str]:
    """The ``<Parameter>``s of a ``<Connect><Stream>`` answer (asserting its exact shape)."""
    assert [c.tag for c in root] == ["Connect", "Hangup"]
    assert root[0].attrib == {"action": f"{PUBLIC_URL}/twilio/stream-ended"}
    (stream,) = list(root[0])
    assert stream.tag == "Stream"
    assert stream.attrib == {
        "url": "wss://voice.example.com/twilio/media",
        "statusCallback": f"{PUBLIC_URL}/twilio/stream-status",
    }
    return {p.attrib["name"]: p.attrib["value"] for p in stream}


async def answer_call(tw: TwilioApp, sid: str, **kw: str) -> ET.Element:
    response = await tw.twilio.post("/twilio/voice", call_params(sid, status="ringing", **kw))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return parse(response.text)


async def events_of(db: Database, sid: str, kind: str) -> list[dict[str, object]]:
    return [e.data or {} for e in await transcript(db, sid) if e.kind == kind]


async def call_row(db: Database, sid: str) -> Call:
    call = await get_call(db, sid)
    assert call is not None
    return call


# --- /twilio/voice ----------------------------------------------------------------------------
async def test_voice_records_call_and_connects_stream(tw: TwilioApp) -> None:
    sid = new_call_sid()
    params = stream_of(await answer_call(tw, sid, to_number=SUPPORT_NUMBER))
    assert (params["flow"], params["thread"], params["signal"]) == ("support", sid, "")
    claims = verify_stream_token(STREAM_SECRET, params["token"])
    assert (claims.call_sid, claims.thread_id, claims.flow, claims.signal) == (sid, sid, "support", "")
    call = await call_row(tw.db, sid)
    assert (call.direction, call.flow, call.thread_id, call.from_number, call.to_number) == (
        "inbound",
        "support",
        sid,
        CALLER,
        SUPPORT_NUMBER,
    )
    assert call.previous_thread_id is None and call.status == "ringing"


async def test_voice_unknown_number_uses_default_flow(tw: TwilioApp) -> None:
    sid = new_call_sid()
    params = stream_of(await answer_call(tw, sid, to_number="+15557770000"))
    assert params["flow"] == "scheduling"


async def test_voice_retry_keeps_one_call(tw: TwilioApp) -> None:
    sid = new_call_sid()
    first = stream_of(await answer_call(tw, sid, to_number=SUPPORT_NUMBER))
    second = stream_of(await answer_call(tw, sid, to_number=SUPPORT_NUMBER))
    assert first["thread"] == second["thread"] == sid
    assert (await call_row(tw.db, sid)).flow == "support"


async def test_voice_outbound_flow_follows_our_number(tw: TwilioApp) -> None:
    sid = new_call_sid()
    params = stream_of(
        await answer_call(tw, sid, from_number=SUPPORT_NUMBER, to_number="+14155550199", direction="outbound-api")
    )
    assert params["flow"] == "support"
    assert (await call_row(tw.db, sid)).direction == "outbound"


async def test_voice_links_callback_to_previous_thread(tw: TwilioApp) -> None:
    first, second = new_call_sid(), new_call_sid()
    await answer_call(tw, first)
    await answer_call(tw, second)
    assert (await call_row(tw.db, second)).previous_thread_id == first
    other = new_call_sid()
    await answer_call(tw, other, from_number="+14155550111")
    assert (await call_row(tw.db, other)).previous_thread_id is None


async def test_voice_ignores_calls_outside_callback_window(tw: TwilioApp) -> None:
    old = new_call_sid()
    await record_call(
        tw.db, sid=old, direction="inbound", from_number=CALLER, to_number=SUPPORT_NUMBER, flow="support", thread_id=old
    )
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=tw.settings.callback_window_hours + 1)
    await update_call(tw.db, old, started_at=long_ago)
    sid = new_call_sid()
    await answer_call(tw, sid)
    assert (await call_row(tw.db, sid)).previous_thread_id is None


# --- signatures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["missing", "forged", "replayed", "host_header", "tampered", "other_token"])
async def test_bad_signatures_get_403_and_change_nothing(tw: TwilioApp, case: str) -> None:
    sid = new_call_sid()
    params = call_params(sid)
    if case == "missing":
        response = await tw.twilio.post("/twilio/voice", params, unsigned=True)
    elif case == "forged":
        response = await tw.twilio.post("/twilio/voice", params, signature="L/OH5YylLD5NRKLltdqwSvS0BnU=")
    elif case == "replayed":  # a genuine signature captured on another endpoint
        response = await tw.twilio.post("/twilio/voice", params, signed_url=f"{PUBLIC_URL}/twilio/status")
    elif case == "host_header":  # signed for the URL the app saw, not the public one
        response = await tw.twilio.post("/twilio/voice", params, signed_url="http://internal:8080/twilio/voice")
    elif case == "tampered":
        good = tw.twilio.sign(f"{PUBLIC_URL}/twilio/voice", params)
        response = await tw.twilio.post("/twilio/voice", {**params, "To": "+15550008888"}, signature=good)
    else:
        from twilio.request_validator import RequestValidator

        sig = RequestValidator("another-token").compute_signature(f"{PUBLIC_URL}/twilio/voice", params)
        response = await tw.twilio.post("/twilio/voice", params, signature=sig)
    assert response.status_code == 403
    assert await get_call(tw.db, sid) is None


@pytest.mark.parametrize(
    "path", ["/twilio/status", "/twilio/stream-status", "/twilio/stream-ended", "/twilio/dial-ended"]
)
async def test_every_webhook_checks_signature(tw: TwilioApp, path: str) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid)
    response = await tw.twilio.post(path, call_params(sid), unsigned=True)
    assert response.status_code == 403
    response = await tw.twilio.post(path, call_params(sid), signed_url=f"{PUBLIC_URL}/twilio/voice")
    assert response.status_code == 403


async def test_signature_with_default_port_accepted(tw: TwilioApp) -> None:
    sid = new_call_sid()
    params = call_params(sid)
    response = await tw.twilio.post("/twilio/voice", params, signed_url="https://voice.example.com:443/twilio/voice")
    assert response.status_code == 200


async def test_validation_off_lets_unsigned_through(
    tmp_path: Path, database_url: str, db: Database, rest: FakeTwilioRest
) -> None:
    settings = make_settings(tmp_path, database_url, rest.url, validate_signatures=False)
    sid = new_call_sid()
    async for tw in start_app(settings, db, rest):
        response = await tw.twilio.post("/twilio/voice", call_params(sid), unsigned=True)
        assert response.status_code == 200
    assert await get_call(db, sid) is not None


# --- status callbacks ---------------------------------------------------------------------------
async def test_status_updates_and_terminal_is_final(tw: TwilioApp) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid)
    response = await tw.twilio.post("/twilio/status", call_params(sid, status="in-progress", SequenceNumber="1"))
    assert response.status_code == 204
    call = await call_row(tw.db, sid)
    assert call.status == "in-progress" and call.answered_at is not None and call.ended_at is None
    await tw.twilio.post("/twilio/status", call_params(sid, status="completed", CallDuration="42", SequenceNumber="3"))
    await tw.twilio.post("/twilio/status", call_params(sid, status="ringing", SequenceNumber="0"))  # late, out of order
    call = await call_row(tw.db, sid)
    assert call.status == "completed" and call.ended_at is not None
    statuses = await events_of(tw.db, sid, "status")
    assert [e["status"] for e in statuses] == ["in-progress", "completed", "ringing"]
    assert statuses[1]["CallDuration"] == "42"


async def test_status_for_unknown_call_is_harmless(tw: TwilioApp) -> None:
    response = await tw.twilio.post("/twilio/status", call_params(new_call_sid(), status="completed"))
    assert response.status_code == 204


async def test_stream_status_events(tw: TwilioApp) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid)
    base = call_params(sid)
    await tw.twilio.post("/twilio/stream-status", {**base, "StreamSid": "MZ1", "StreamEvent": "stream-started"})
    await tw.twilio.post(
        "/twilio/stream-status",
        {**base, "StreamSid": "MZ1", "StreamEvent": "stream-error", "StreamError": "31920 handshake failed"},
    )
    assert (await call_row(tw.db, sid)).stream_sid == "MZ1"
    events = await events_of(tw.db, sid, "stream")
    assert events == [
        {"event": "stream-started", "stream_sid": "MZ1"},
        {"event": "stream-error", "stream_sid": "MZ1", "error": "31920 handshake failed"},
    ]


# --- /twilio/stream-ended -----------------------------------------------------------------------
async def stream_ended(tw: TwilioApp, sid: str, **kw: str) -> ET.Element:
    response = await tw.twilio.post("/twilio/stream-ended", call_params(sid, **kw))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return parse(response.text)


async def test_stream_ended_transfer_dials_configured_target(tw: TwilioApp) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid, to_number=SUPPORT_NUMBER)
    await update_call(
        tw.db,
        sid,
        outcome="transfer_requested",
        transfer_target="billing",
        transfer_reason="refund",
        transfer_summary="Ann wants a refund for order 12.",
    )
    root = await stream_ended(tw, sid, to_number=SUPPORT_NUMBER)
    assert [c.tag for c in root] == ["Dial"]
    assert root[0].attrib == {
        "action": f"{PUBLIC_URL}/twilio/dial-ended",
        "answerOnBridge": "true",
        "timeout": "25",
        "callerId": CALLER,
    }
    (number,) = list(root[0])
    assert number.tag == "Number" and number.text == "+15550100002"
    assert number.attrib == {"url": f"{PUBLIC_URL}/twilio/whisper?sid={sid}"}
    call = await call_row(tw.db, sid)
    assert call.transfer_status == "dialing" and call.outcome == "transfer_requested"
    (event,) = await events_of(tw.db, sid, "dial")
    assert event == {"target": "billing", "reason": "refund", "status": "dialing"}


@pytest.mark.parametrize("target", ["sales", "+15551112222", "", "front_desk"])
async def test_stream_ended_refuses_unconfigured_target(tw: TwilioApp, target: str) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid, to_number=SUPPORT_NUMBER)  # support flow: billing, support only
    await update_call(tw.db, sid, outcome="transfer_requested", transfer_target=target, transfer_summary="x")
    root = await stream_ended(tw, sid)
    assert [c.tag for c in root] == ["Say", "Hangup"]
    assert "Dial" not in ET.tostring(root, encoding="unicode")
    call = await call_row(tw.db, sid)
    assert (call.outcome, call.transfer_status) == ("transfer_refused", "refused")
    assert await events_of(tw.db, sid, "dial") == [{"target": target, "refused": True}]


async def test_stream_ended_by_agent_hangs_up(tw: TwilioApp) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid)
    await update_call(tw.db, sid, outcome="ended_by_agent")
    root = await stream_ended(tw, sid)
    assert [c.tag for c in root] == ["Hangup"]
    assert (await call_row(tw.db, sid)).reconnects == 0


async def test_dropped_stream_reconnects_then_gives_up(tw: TwilioApp) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid, to_number=SUPPORT_NUMBER)
    for attempt in (1, 2):  # max_reconnects = 2
        params = stream_of(await stream_ended(tw, sid))
        assert (params["thread"], params["flow"], params["signal"]) == (sid, "support", "reconnected")
        claims = verify_stream_token(STREAM_SECRET, params["token"])
        assert (claims.call_sid, claims.thread_id, claims.signal) == (sid, sid, "reconnected")
        assert (await call_row(tw.db, sid)).reconnects == attempt
    root = await stream_ended(tw, sid)
    assert [c.tag for c in root] == ["Say", "Hangup"]
    call = await call_row(tw.db, sid)
    assert call.reconnects == 2 and call.outcome == "reconnects_exhausted"
    assert await events_of(tw.db, sid, "reconnect") == [{"attempt": 1}, {"attempt": 2}, {"gave_up": True}]


async def test_stream_ended_after_caller_hung_up(tw: TwilioApp) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid)
    root = await stream_ended(tw, sid, status="completed")
    assert [c.tag for c in root] == ["Hangup"]
    assert (await call_row(tw.db, sid)).reconnects == 0


async def test_stream_ended_unknown_call(tw: TwilioApp) -> None:
    assert [c.tag for c in await stream_ended(tw, new_call_sid())] == ["Hangup"]


# --- whisper --------------------------------------------------------------------------------
async def test_whisper_get_and_post(tw: TwilioApp) -> None:
    sid = new_call_sid()
    await answer_call(tw, sid)
    await update_call(tw.db, sid, transfer_summary="Ann Lee, refund for order 12.")
    response = await tw.twilio.get("/twilio/whisper", {"sid": sid})
    assert response.status_code == 200
    root = parse(response.text)
    assert [c.tag for c in root] == ["Say"] and root[0].text == "Ann Lee, refund for order 12."
    child = call_params(new_call_sid(), from_number=CALLER, to_number="+15550100002", direction="outbound-dial")
    response = await tw.twilio.post("/twilio/whisper", child, query={"sid": sid})
    assert response.status_code == 200 and parse(response.text)[0].text == "Ann Lee, refund for order 12."


async def test_whisper_signature_covers_the_sid(tw: TwilioApp) -> None:
    sid, other = new_call_sid(), new_call_sid()
    await answer_call(tw, sid)
    assert (await tw.twilio.get("/twilio/whisper", {"sid": sid}, unsigned=True)).status_code == 403
    good = tw.twilio.sign(tw.twilio.url("/twilio/whisper", {"sid": sid}), {})
    response = await tw.http.get(f"/twilio/whisper?sid={other}", headers={"X-Twilio-Signature": good})
    assert response.status_code == 403


async def test_whisper_without_summary(tw: TwilioApp) -> None:
    response = await tw.twilio.get("/twilio/whisper", {"sid": new_call_sid()})
    assert response.status_code == 200
    assert [c.tag for c in parse(response.text)] == ["Say"]


# --- /twilio/dial-ended -------------------------------------------------------------------------
async def start_transfer(tw: TwilioApp, sid: str) -> None:
    await answer_call(tw, sid, to_number=SUPPORT_NUMBER)
    await update_call(tw.db, sid, outcome="transfer_requested", transfer_target="support", transfer_summary="s")
    assert [c.tag for c in await stream_ended(tw, sid)] == ["Dial"]


@pytest.mark.parametrize("status", ["completed", "answered"])
async def test_dial_answered(tw: TwilioApp, status: str) -> None:
    sid = new_call_sid()
    await start_transfer(tw, sid)
    extra = {"DialCallStatus": status, "DialCallSid": "CA" + "d" * 32, "DialCallDuration": "75"}
    response = await tw.twilio.post("/twilio/dial-ended", call_params(sid, **extra))
    assert [c.tag for c in parse(response.text)] == ["Hangup"]
    call = await call_row(tw.db, sid)
    assert (call.outcome, call.transfer_status) == ("transferred", status)
    assert await events_of(tw.db, sid, "transfer_result") == [
        {"target": "support", "status": status, "dial_call_sid": "CA" + "d" * 32, "duration_s": "75"}
    ]


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled"])
async def test_dial_not_answered_returns_to_agent(tw: TwilioApp, status: str) -> None:
    sid = new_call_sid()
    await start_transfer(tw, sid)
    response = await tw.twilio.post("/twilio/dial-ended", call_params(sid, DialCallStatus=status))
    params = stream_of(parse(response.text))
    assert (params["thread"], params["flow"], params["signal"]) == (sid, "support", f"transfer_failed:{status}")
    assert verify_stream_token(STREAM_SECRET, params["token"]).signal == f"transfer_failed:{status}"
    call = await call_row(tw.db, sid)
    assert (call.outcome, call.transfer_status, call.reconnects) == (None, status, 0)
    # The stream that follows ending without a decision is a drop again, not a transfer.
    assert stream_of(await stream_ended(tw, sid))["signal"] == "reconnected"


async def test_dial_ended_after_caller_left(tw: TwilioApp) -> None:
    sid = new_call_sid()
    await start_transfer(tw, sid)
    response = await tw.twilio.post(
        "/twilio/dial-ended", call_params(sid, status="completed", DialCallStatus="canceled")
    )
    assert [c.tag for c in parse(response.text)] == ["Hangup"]
    assert (await call_row(tw.db, sid)).outcome == "caller_hung_up"


async def test_transfer_round_trip(tw: TwilioApp) -> None:
    """Stream ends for a transfer -> Dial with whisper -> nobody answers -> agent again ->
    second transfer is answered -> recorded."""
    sid = new_call_sid()
    await answer_call(tw, sid, to_number=SUPPORT_NUMBER)
    await update_call(
        tw.db, sid, outcome="transfer_requested", transfer_target="billing", transfer_summary="Refund for Ann."
    )
    dial = (await stream_ended(tw, sid))[0]
    whisper_url = dial[0].attrib["url"]
    path, _, query = whisper_url.removeprefix(PUBLIC_URL).partition("?")
    whisper = await tw.twilio.post(path, call_params(new_call_sid()), query=dict([query.split("=")]))
    assert parse(whisper.text)[0].text == "Refund for Ann."
    back = await tw.twilio.post("/twilio/dial-ended", call_params(sid, DialCallStatus="no-answer"))
    assert stream_of(parse(back.text))["signal"] == "transfer_failed:no-answer"
    await update_call(tw.db, sid, outcome="transfer_requested", transfer_target="billing")
    assert [c.tag for c in await stream_ended(tw, sid)] == ["Dial"]
    done = await tw.twilio.post("/twilio/dial-ended", call_params(sid, DialCallStatus="completed"))
    assert [c.tag for c in parse(done.text)] == ["Hangup"]
    call = await call_row(tw.db, sid)
    assert (call.outcome, call.transfer_status) == ("transferred", "completed")
    results = [e["status"] for e in await events_of(tw.db, sid, "transfer_result")]
    assert results == ["no-answer", "completed"]
