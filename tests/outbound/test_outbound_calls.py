"""Outbound calls end to end: the real server (uvicorn on 127.0.0.1), the real twilio client
inside it talking to the simulator's Twilio REST API, signed callbacks, and real WebSockets
for the calls that answer. Speech is the simulator's text speech (instant, exact)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment, Call, DoNotCall, OutboundAudit
from dialgraph.telephony.simulator.cli import simulate_outbound
from dialgraph.telephony.simulator.scenario import Callee, Outbound, Say, Scenario, WaitForAgent, load_scenario
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer, decode_texts
from dialgraph.telephony.simulator.twilio_api import TwilioApi
from dialgraph.tools import do_not_call
from tests.fakes.sim_server import LiveServer, live_server

ADMIN = {"Authorization": "Bearer dev-admin-token"}
ALL_DAY = {"window": {"start": "00:00", "end": "24:00"}}
CALLER_ID = "+15550003000"
DLT = {"entity_id": "1101234567890123456", "header": "ACMESL"}


def outbound(**extra: Any) -> dict[str, Any]:
    return {"outbound": {**ALL_DAY, "default_from": CALLER_ID, **extra}}


async def db_of(server: LiveServer) -> Database:
    return Database(server.database_url)


def creates(api: TwilioApi) -> list[Any]:
    return [r for r in api.requests if r.method == "POST" and r.path.endswith("/Calls.json")]


async def place(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as http:
        return await http.post("/api/calls", json=body, headers=ADMIN)


async def test_a_human_answers_is_greeted_by_name_and_books(tmp_path: Path) -> None:
    async with TwilioApi() as api, live_server(tmp_path, twilio_api_url=api.url, **outbound()) as server:
        result = await simulate_outbound(
            load_scenario("outbound_sales_human"),
            url=server.url,
            api=api,
            synthesizer=TextSynthesizer(),
            recognizer=TextRecognizer(),
            database_url=server.database_url,
        )
        assert result.call_sid is not None, result.failures
        call = result.call
        assert call is not None and call.answered_by == "human"
        assert call.agent_texts, "the agent said nothing"
        first = " ".join(call.agent_texts[:3])  # the greeting's phrases
        assert "Jane" in first and "demo request" in first  # greets by name, says why it calls
        form = creates(api)[0].form
        assert form["MachineDetection"] == "DetectMessageEnd" and form["AsyncAmd"] == "true"
        assert form["AsyncAmdStatusCallback"].endswith("/twilio/amd")
        assert creates(api)[0].values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
        db = await db_of(server)
        try:
            async with db.sessionmaker() as s:
                row = await s.get(Call, result.call_sid)
                assert row is not None and row.direction == "outbound" and row.flow == "sales"
                assert row.context == {"name": "Jane Doe", "purpose": "your demo request"}
                booked = (await s.scalars(select(Appointment).where(Appointment.phone == "+15557770001"))).all()
                assert len(booked) == 1, "the follow-up was not booked"
                placed = (await s.scalars(select(OutboundAudit).where(OutboundAudit.call_sid == row.sid))).all()
                assert [a.decision for a in placed] == ["placed"]
        finally:
            await db.aclose()
        assert result.conversation is not None
        assert result.ok, (result.failures, [c for c in result.conversation.checks if not c.ok])


async def test_a_machine_gets_the_voicemail_in_the_flows_voice_then_a_hang_up(tmp_path: Path) -> None:
    async with TwilioApi() as api, live_server(tmp_path, twilio_api_url=api.url, **outbound()) as server:
        api.callees["+15557770002"] = Callee(kind="voicemail", ring_s=0.2, beep_after_s=0.5, hangup_after_s=30)
        response = await place(
            server, {"to": "+15557770002", "flow": "sales", "context": {"name": "Ravi Kumar", "purpose": "your quote"}}
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "queued"
        sid = response.json()["call_sid"]
        call = await api.wait_ended(sid, timeout_s=30)
        assert call.answered_by == "machine_end_beep"
        assert call.hung_up_by == "agent"  # our <Hangup/> after the message, not the machine's time-out
        assert call.plays, "no <Play> reached the machine"
        assert call.redirects, "the live call was not moved to the message"
        heard = " ".join(decode_texts(call.plays[0]))  # 8 kHz mu-law, as the machine heard it
        assert "Ravi" in heard and "your quote" in heard  # the flow's voicemail, for this contact
        db = await db_of(server)
        try:
            async with db.sessionmaker() as s:
                row = await s.get(Call, sid)
                assert row is not None and row.outcome == "voicemail" and row.answered_by == "machine_end_beep"
                decisions = (await s.scalars(select(OutboundAudit.decision).where(OutboundAudit.call_sid == sid))).all()
                assert sorted(decisions) == ["placed", "voicemail"]
        finally:
            await db.aclose()


async def test_a_spoken_opt_out_adds_the_number_and_the_next_call_is_refused(tmp_path: Path) -> None:
    to = "+15557770003"
    steps = (WaitForAgent(), Say("Please stop calling me."), WaitForAgent())
    scenario = Scenario(
        name="opt_out",
        steps=steps,
        flow="sales",
        to_number=to,
        outbound=Outbound(callee=Callee(kind="human", ring_s=0.2, steps=steps, linger_s=5), context={"name": "Sam"}),
    )
    async with TwilioApi() as api, live_server(tmp_path, twilio_api_url=api.url, **outbound()) as server:
        result = await simulate_outbound(
            scenario, url=server.url, api=api, synthesizer=TextSynthesizer(), recognizer=TextRecognizer()
        )
        assert result.call_sid is not None, result.failures
        assert result.hung_up_by == "agent"
        db = await db_of(server)
        try:
            rows = await do_not_call.lookup(db, to)
            assert [r.source for r in rows] == ["opt_out"]
            async with db.sessionmaker() as s:
                row = await s.get(Call, result.call_sid)
                assert row is not None and row.outcome == "opted_out"
        finally:
            await db.aclose()
        before = len(creates(api))
        again = await place(server, {"to": to, "flow": "sales"})
        assert again.status_code == 409 and again.json()["detail"]["reason"] == "opted_out"
        assert len(creates(api)) == before  # refused: no REST request at all


async def test_refusals_make_no_rest_request(tmp_path: Path) -> None:
    async with (
        TwilioApi() as api,
        live_server(tmp_path, twilio_api_url=api.url, limits={"callee_attempts_per_day": 1}, **outbound()) as server,
    ):
        api.default_callee = Callee(kind="busy", ring_s=0.1)
        db = await db_of(server)
        try:
            # the business's opt-out list
            async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
                added = await http.post("/api/dnd", json={"number": "+15557770010"}, headers=ADMIN)
                assert added.status_code == 201
            r = await place(server, {"to": "+15557770010", "flow": "sales"})
            assert r.status_code == 409 and r.json()["detail"]["reason"] == "opted_out"
            # the national registry (NCPR), promotional call
            report = await do_not_call.import_registry(db, ["number,categories", "9812345678,1|2"])
            assert report.imported == 1
            r = await place(
                server,
                {"to": "+919812345678", "flow": "sales", "from": "+911401234567", "purpose": "promotional", "dlt": DLT},
            )
            assert r.status_code == 409 and r.json()["detail"]["reason"] == "dnd"
            # DLT: a +91 callee needs the principal entity and the header
            r = await place(server, {"to": "+919876543210", "flow": "sales"})
            assert r.status_code == 409
            detail = r.json()["detail"]
            assert detail["reason"] == "dlt_missing" and {"entity_id", "header"} <= set(detail["missing"])
            # a callee on no list, within the window: placed
            r = await place(server, {"to": "+12125551234", "flow": "sales", "timezone": "America/New_York"})
            assert r.status_code == 201, r.text
            # attempts per day: that number has had its one call today
            r = await place(server, {"to": "+12125551234", "flow": "sales"})
            assert r.status_code == 409 and r.json()["detail"]["reason"] == "rate_limited"
            assert len(creates(api)) == 1  # only the one allowed call reached Twilio
            async with db.sessionmaker() as s:
                refused = (
                    await s.scalars(select(OutboundAudit.reason).where(OutboundAudit.decision == "refused"))
                ).all()
            assert sorted(refused) == ["dlt_missing", "dnd", "opted_out", "rate_limited"]
        finally:
            await db.aclose()


async def test_calling_hours_refuse_with_the_next_allowed_instant(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    kolkata = now.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
    # a one-hour window that starts two hours from now, Kolkata time
    start = (kolkata + dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    window = {"start": start.strftime("%H:%M"), "end": (start + dt.timedelta(hours=1)).strftime("%H:%M")}
    if window["start"] >= window["end"]:  # wraps past midnight: shift to a safe hour
        window = {"start": "00:00", "end": "00:30"}
    async with (
        TwilioApi() as api,
        live_server(tmp_path, twilio_api_url=api.url, outbound={"window": window, "dlt": DLT}) as server,
    ):
        r = await place(server, {"to": "+919876543210", "flow": "sales", "from": CALLER_ID})
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert detail["reason"] == "calling_hours"
        allowed = dt.datetime.fromisoformat(detail["next_allowed_at"])
        assert allowed > now
        local = allowed.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
        assert local.strftime("%H:%M") == window["start"]
        assert not creates(api)


async def test_bad_requests_name_the_field(tmp_path: Path) -> None:
    async with TwilioApi() as api, live_server(tmp_path, twilio_api_url=api.url, **outbound()) as server:
        r = await place(server, {"to": "5551234567", "flow": "sales"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "to"]
        r = await place(server, {"to": "+15551234567", "flow": "pizza"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "flow"]
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            r = await http.post("/api/calls", json={"to": "+15551234567", "flow": "sales"})
        assert r.status_code == 401
        assert not creates(api)
        db = await db_of(server)
        try:
            async with db.sessionmaker() as s:
                assert await s.scalar(select(func.count()).select_from(DoNotCall)) == 0
        finally:
            await db.aclose()
