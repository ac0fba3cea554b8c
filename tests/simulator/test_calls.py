"""Whole calls of the three shipped flows through the simulator against the real server.

The server runs with uvicorn on 127.0.0.1 (``create_app`` on SQLite, the real graphs and
offline model); speech is the text-carrying fake (``tests.fakes.speech``), so every
word the simulated caller says reaches the graph exactly and the simulator "hears" exactly
the audio the server sent, as Twilio would have played it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment, Call, CallEvent, Message
from dialgraph.telephony.simulator.cli import SimulationResult, simulate
from dialgraph.telephony.simulator.expect import Observed, check_expectations
from dialgraph.telephony.simulator.scenario import AppointmentExpectation, load_scenario
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer
from tests.fakes.sim_server import LiveServer, live_server


async def run(server: LiveServer, name: str, out: Path) -> SimulationResult:
    return await simulate(
        name,
        url=server.url,
        admin_token="dev-admin-token",
        out_dir=out,
        synthesizer=TextSynthesizer(),
        recognizer=TextRecognizer(),
        database_url=server.database_url,
    )


async def rows(url: str, model: type, *where: object) -> list:
    db = Database(url)
    try:
        async with db.sessionmaker() as s:
            return list(await s.scalars(select(model).where(*where)))
    finally:
        await db.aclose()


async def test_three_flows_through_the_simulator(tmp_path: Path) -> None:
    async with live_server(tmp_path) as server:
        scheduling, support, sales = await asyncio.gather(
            run(server, "scheduling_demo", tmp_path / "out"),
            run(server, "support_basic", tmp_path / "out"),
            run(server, "sales_basic", tmp_path / "out"),
        )
    url = server.database_url
    for result in (scheduling, support, sales):
        assert result.protocol_violations == 0, result.violations
        assert result.ok, (result.checks, result.failures)
        assert result.recording is not None and result.recording.stat().st_size > 44

    # Scheduling: booked, moved, a transfer nobody answered, back to the agent, a message.
    (appt,) = await rows(url, Appointment, Appointment.phone == "+15551230001")
    assert appt.status == "booked" and appt.name == "Jane Doe"
    local = appt.starts_at.astimezone(ZoneInfo("UTC"))
    assert (local.weekday(), local.hour, local.minute) == (1, 15, 0)  # moved to Tuesday 3 pm
    (call,) = await rows(url, Call, Call.sid == scheduling.call_sid)
    assert (call.transfer_target, call.transfer_status, call.outcome) == ("front_desk", "no-answer", "ended_by_agent")
    assert scheduling.legs == 2  # the failed transfer reopened the stream on the same thread
    assert [t["status"] for t in scheduling.transfers] == ["no-answer"]
    assert scheduling.transfers[0]["whisper"], "the human was told who is calling"
    after_transfer = [line.text for line in scheduling.transcript if line.role == "agent"]
    assert any("nobody" in text.lower() or "message" in text.lower() for text in after_transfer[5:])
    (message,) = await rows(url, Message, Message.call_sid == scheduling.call_sid)
    assert "parking" in message.body
    assert all(t.reply_ms is not None for t in scheduling.turns)

    # Support: the caller barged in over the answer; the agent was cleared and the call
    # went to billing, who answered.
    assert support.clears >= 1
    (barge,) = [t for t in support.turns if t.kind == "barge_in"]
    assert barge.clear_ms is not None
    (call,) = await rows(url, Call, Call.sid == support.call_sid)
    assert (call.transfer_target, call.transfer_status) == ("billing", "completed")
    interrupted = await rows(url, CallEvent, CallEvent.call_sid == support.call_sid, CallEvent.interrupted.is_(True))
    assert len(interrupted) == 1 and interrupted[0].role == "agent"
    cut = interrupted[0]  # what was generated but not heard is kept beside the heard text
    assert cut.data and cut.data["unheard"] and cut.data["unheard"] not in (cut.text or "")
    assert set(cut.data["timings"]) >= {"asr_final_ms", "first_token_ms", "first_tts_audio_ms", "first_frame_ms"}

    # Sales: a qualified lead booked a follow-up.
    (followup,) = await rows(url, Appointment, Appointment.phone == "+15551230003")
    local = followup.starts_at.astimezone(ZoneInfo("UTC"))
    assert (local.weekday(), local.hour) == (3, 11) and followup.name == "Sam Lee"

    # The same evidence fails a wrong expectation: the check is not a rubber stamp.
    scenario = load_scenario("sales_basic")
    wrong = dataclasses.replace(
        scenario.expect, appointment=AppointmentExpectation(local="thursday 12:00"), transfer_to="sales"
    )
    observed = Observed(
        call_sid=sales.call_sid,
        from_number=scenario.from_number,
        ended_by=sales.ended_by,
        agent_text=[line.text for line in sales.transcript if line.role == "agent"],
        barge_ins=0,
        barge_ins_cleared=0,
        violations=0,
        dial_statuses=[],
    )
    checks = await check_expectations(wrong, observed, server_call=sales.server_call, database_url=url)
    failed = {c.label for c in checks if not c.ok}
    assert failed == {"appointment at thursday 12:00 (UTC)", "transfer to sales"}


async def test_calls_with_the_graphs_on_their_own_loop(tmp_path: Path) -> None:
    """``graph_loop = "own"``: the same calls, the graphs run on ``graphs.graph_loop.GraphLoop``
    (the barge-in's heard-text repair and the transfer cross to it and back)."""
    async with live_server(tmp_path, graph_loop="own") as server:
        scheduling, support = await asyncio.gather(
            run(server, "scheduling_demo", tmp_path / "out"), run(server, "support_basic", tmp_path / "out")
        )
    url = server.database_url
    for result in (scheduling, support):
        assert result.protocol_violations == 0, result.violations
        assert result.ok, (result.checks, result.failures)
    (appt,) = await rows(url, Appointment, Appointment.phone == "+15551230001")
    assert appt.status == "booked" and appt.name == "Jane Doe"
    assert [t.kind for t in support.turns].count("barge_in") == 1
    interrupted = await rows(url, CallEvent, CallEvent.call_sid == support.call_sid, CallEvent.interrupted.is_(True))
    assert len(interrupted) == 1 and interrupted[0].role == "agent"
