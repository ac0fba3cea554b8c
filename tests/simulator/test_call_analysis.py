"""Post-call analysis of whole calls: the simulator's scenarios through the real server.

The server runs with uvicorn on 127.0.0.1 (``create_app``, the real graphs and offline model,
SQLite and PostgreSQL); when the simulated Twilio posts the final status, the instance
analyses the call in the background and stores the summary and the flow's fields on the
call row. The expected values come from the scenario and from independent evidence (the
appointment rows the tools wrote), not from the analysis code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from dialgraph.server.analysis import wait_for_analysis
from dialgraph.server.app import create_app
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment, Call
from dialgraph.telephony.simulator.cli import simulate_outbound
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.simulator.scenario import load_scenario
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer
from dialgraph.telephony.simulator.twilio_api import TwilioApi
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply
from tests.fakes.sim_server import LiveServer, sim_settings, text_speech
from tests.simulator.test_calls import run


@asynccontextmanager
async def serve(tmp_path: Path, database_url: str, **values: Any) -> AsyncIterator[LiveServer]:
    """``tests.fakes.sim_server.live_server`` on the given database."""
    port = free_port()
    cfg = sim_settings(tmp_path, port, **values).model_copy(update={"database_url": database_url})
    app = create_app(cfg, overrides=text_speech())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.02)
        yield LiveServer(url=cfg.public_url, settings=cfg, app=app)
    finally:
        server.should_exit = True
        await task


async def stored(url: str, sid: str) -> tuple[Call, list[Appointment]]:
    """The call row and the appointments its tools wrote (read in a fresh connection)."""
    db = Database(url)
    try:
        found = await wait_for_analysis(db, sid, timeout_s=20)
        assert found is not None, "no analysis was stored"
        async with db.sessionmaker() as s:
            call = await s.get(Call, sid)
            assert call is not None
            phone = call.to_number if call.direction == "outbound" else call.from_number
            appts = list(await s.scalars(select(Appointment).where(Appointment.phone == phone)))
        return call, appts
    finally:
        await db.aclose()


def local_iso(appt: Appointment, zone: str = "UTC") -> str:
    from zoneinfo import ZoneInfo

    return appt.starts_at.astimezone(ZoneInfo(zone)).isoformat()


@pytest.mark.slow
async def test_the_three_flows_are_summarised_and_their_fields_filled(tmp_path: Path, database_url: str) -> None:
    async with serve(tmp_path, database_url) as server:
        scheduling, support, sales = await asyncio.gather(
            run(server, "scheduling_demo", tmp_path / "out"),
            run(server, "support_basic", tmp_path / "out"),
            run(server, "sales_basic", tmp_path / "out"),
        )
        for result in (scheduling, support, sales):
            assert result.ok, (result.checks, result.failures)
        url = server.database_url
        # Scheduling: booked Tuesday 10:00, moved to 15:00; the front desk did not answer; a message.
        call, (appt,) = await stored(url, scheduling.call_sid)
        assert call.analysis is not None and call.analysis["model"] == "offline"
        assert call.analysis["fields"] == {
            "outcome": "booked",  # a new appointment, moved within the same call
            "appointment_time": local_iso(appt),
            "caller_name": "Jane Doe",
        }
        assert appt.starts_at.hour == 15 and local_iso(appt).endswith("T15:00:00+00:00")
        summary = call.analysis["summary"]
        assert summary.startswith("Jane Doe booked an appointment and moved it to Tuesday "), summary
        assert "at 3 pm" in summary
        assert "transfer to the front desk failed (no answer)" in summary
        assert "message was left for the front desk" in summary

        # Support: a question, a barge-in, then billing took the call.
        call, _ = await stored(url, support.call_sid)
        assert call.analysis is not None
        assert call.analysis["fields"] == {
            "issue_category": "billing",
            "resolved": False,
            "needs_follow_up": False,
            "transferred_to": "billing",
        }
        assert "transferred to the billing team" in call.analysis["summary"]

        # Sales: need, timeline, budget, decision maker, and a follow-up booked.
        call, (followup,) = await stored(url, sales.call_sid)
        assert call.analysis is not None
        assert call.analysis["fields"] == {
            "interest": "Your software for my team of twenty people",
            "budget": "About five thousand dollars",
            "timeline": "Next month",
            "decision_maker": True,
            "next_step": "follow_up_booked",
            "follow_up_at": local_iso(followup),
        }
        assert local_iso(followup).endswith("T11:00:00+00:00")
        summary = call.analysis["summary"]
        assert summary.startswith("Sam Lee is interested in your software for my team of twenty people."), summary
        assert "A follow-up call is booked for Thursday " in summary and "at 11 am" in summary
    # the API shape the call detail shows
    from dialgraph.server.analysis import analysis_of

    assert analysis_of(call) == {"summary": summary, "fields": call.analysis["fields"]}


@pytest.mark.slow
async def test_an_outbound_sales_call_is_summarised_with_the_contacts_name(tmp_path: Path) -> None:
    outbound = {"outbound": {"window": {"start": "00:00", "end": "24:00"}, "default_from": "+15550003000"}}
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    async with TwilioApi() as api, serve(tmp_path, url, twilio_api_url=api.url, **outbound) as s:
        result = await simulate_outbound(
            load_scenario("outbound_sales_human"),
            url=s.url,
            api=api,
            synthesizer=TextSynthesizer(),
            recognizer=TextRecognizer(),
            database_url=s.database_url,
        )
        assert result.call_sid is not None and result.ok, result.failures
        call, (followup,) = await stored(s.database_url, result.call_sid)
    assert call.direction == "outbound" and call.analysis is not None
    assert call.analysis["fields"] == {
        "interest": "Your software for my team of twenty people",
        "budget": "About five thousand dollars",
        "timeline": "Next month",
        "decision_maker": True,
        "next_step": "follow_up_booked",
        "follow_up_at": local_iso(followup),
    }
    assert call.analysis["summary"].startswith("Jane Doe is interested in your software")


@pytest.mark.slow
async def test_a_hosted_model_writes_the_analysis_through_structured_output(tmp_path: Path) -> None:
    answer = {
        "summary": "The caller asked about opening hours, then asked for billing about card 4242 4242 4242 4242.",
        "fields": {
            "issue_category": "billing",
            "resolved": False,
            "needs_follow_up": True,
            "transferred_to": "billing",
        },
    }
    async with FakeOpenAIServer(lambda body: ScriptedReply(text=json.dumps(answer))) as fake:
        url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
        # the flows stay on the offline model; only the analysis uses the hosted one
        async with serve(tmp_path, url, analysis={"model": f"openai-compatible:{fake.base_url}/gpt-analysis"}) as s:
            result = await run(s, "support_basic", tmp_path / "out")
            assert result.ok, result.failures
            call, _ = await stored(s.database_url, result.call_sid)
    assert call.analysis is not None and call.analysis["model"] == "gpt-analysis"
    assert call.analysis["fields"] == answer["fields"]
    summary = call.analysis["summary"]
    assert summary.startswith("The caller asked about opening hours, then asked for billing")
    assert "4242 4242" not in summary and "[card ending 4242]" in summary  # stored redacted
    (request,) = fake.requests  # one request, the structured one
    schema = request["response_format"]["json_schema"]
    assert request["response_format"]["type"] == "json_schema" and schema["strict"] is True
    fields = schema["schema"]["properties"]["fields"]
    assert set(fields["properties"]) == {"issue_category", "resolved", "needs_follow_up", "transferred_to"}
    prompt = "\n".join(str(m["content"]) for m in request["messages"])
    assert "caller: What are your opening hours?" in prompt  # the stored transcript
    assert '"tool": "request_transfer"' in prompt and '"target": "billing"' in prompt  # the checkpoint's tool calls
    assert '"outcome": "transferred"' in prompt  # the call row
