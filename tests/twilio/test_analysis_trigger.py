"""The final status callback schedules the post-call analysis and answers at once: nothing
Twilio (or the call) waits on runs the model. SQLite and PostgreSQL, signed webhooks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from dialgraph.server.analysis import analysis_of, wait_for_analysis
from dialgraph.server.core.call_store import add_events, get_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import CallEvent
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply
from dialgraph.telephony.simulator.webhooks import call_params, new_call_sid
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.twilio.conftest import SUPPORT_NUMBER, make_settings, start_app

ANSWER = {
    "summary": "The caller asked for a refund of a double charge.",
    "fields": {"issue_category": "billing", "resolved": False, "needs_follow_up": True, "transferred_to": None},
}


async def test_the_status_callback_does_not_wait_for_the_analysis(
    tmp_path: Path, db: Database, rest: FakeTwilioRest
) -> None:
    release = asyncio.Event()
    reply = ScriptedReply(text=json.dumps(ANSWER), hold_after=2, release=release)
    async with FakeOpenAIServer(lambda body: reply) as fake:
        model = f"openai-compatible:{fake.base_url}/gpt-analysis"
        settings = make_settings(tmp_path, db.url, rest.url, analysis={"model": model, "delay_s": 0})
        async for tw in start_app(settings, db, rest):
            sid = new_call_sid()
            answered = await tw.twilio.post(
                "/twilio/voice", call_params(sid, to_number=SUPPORT_NUMBER, status="ringing")
            )
            assert answered.status_code == 200
            await add_events(db, [CallEvent(call_sid=sid, kind="turn", role="caller", text="I was charged twice.")])
            # the final status: answered while the model has not finished (it is held)
            done = await asyncio.wait_for(
                tw.twilio.post("/twilio/status", call_params(sid, to_number=SUPPORT_NUMBER, status="completed")), 5
            )
            assert done.status_code == 204
            for _ in range(200):
                if fake.requests:
                    break
                await asyncio.sleep(0.02)
            assert len(fake.requests) == 1, "the analysis never asked the model"
            row = await get_call(db, sid)
            assert row is not None and row.analysis is not None and "claim" in row.analysis  # under way
            assert analysis_of(row) is None
            release.set()
            found = await wait_for_analysis(db, sid, timeout_s=10)
            assert found == ANSWER
            row = await get_call(db, sid)
            assert row is not None and row.analysis is not None and row.analysis["model"] == "gpt-analysis"
