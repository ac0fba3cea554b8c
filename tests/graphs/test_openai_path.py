"""The production path: ChatOpenAI (real SDK, real HTTP) against a local OpenAI-compatible fake."""

from __future__ import annotations

import datetime as dt
import json
from contextlib import AsyncExitStack
from zoneinfo import ZoneInfo

from sqlalchemy import select

from dialgraph.graphs.model import build_chat_model
from dialgraph.graphs.runtime import build_runners
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment
from dialgraph.server.core.settings import Settings
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply
from tests.fakes.graph_calls import Call, fixed_clock

CALLER = "+15551234567"


async def test_scheduling_conversation_through_chat_openai(flow_settings: Settings, db: Database) -> None:
    script = [
        ScriptedReply(
            tool_calls=[("book_appointment", {"start": "2026-11-27T10:00", "name": "Ana Lopez", "purpose": "check-up"})]
        ),
        ScriptedReply(text="You're booked for Friday the 27th of November at 10 in the morning. Anything else?"),
        ScriptedReply(text="Thanks for calling, goodbye!", tool_calls=[("end_call", {"reason": "completed"})]),
        ScriptedReply(text=""),
    ]
    async with FakeOpenAIServer(script) as server, AsyncExitStack() as stack:
        model = build_chat_model(f"openai-compatible:{server.base_url}/fake-model", settings=flow_settings)
        runners = await build_runners(flow_settings, db, stack, clock=fixed_clock, model=model)
        call = Call.open(runners["scheduling"], flow_settings, "scheduling")
        await call.start()
        assert server.requests == []  # the greeting costs no model call

        reply = await call.say("I'd like a check-up next Friday at ten, my name is Ana Lopez")
        assert reply.text == "You're booked for Friday the 27th of November at 10 in the morning. Anything else?"
        assert len(reply.chunks) > 5  # streamed token by token, not in one piece

        bye = await call.say("No, that's all, bye")
        assert "goodbye" in bye.text and bye.end is not None and bye.end.reason == "completed"

    async with db.sessionmaker() as session:
        [appt] = (await session.scalars(select(Appointment))).all()
    assert appt.phone == CALLER and appt.name == "Ana Lopez"
    assert appt.starts_at.astimezone(ZoneInfo("America/New_York")).replace(tzinfo=None) == dt.datetime(2026, 11, 27, 10)

    first, second = server.requests[0], server.requests[1]
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert {t["function"]["name"] for t in first["tools"]} >= {
        "book_appointment",
        "find_free_slots",
        "request_transfer",
    }
    assert "save_lead" not in {t["function"]["name"] for t in first["tools"]}
    system = first["messages"][0]
    assert system["role"] == "system" and "Local time now: 2026-11-20T10:00" in system["content"]
    assert "front_desk = front desk" in system["content"]
    tool_msg = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool_msg["content"].startswith("Booked under the name Ana Lopez")
    # the caller's number travels in the run context, never to the model
    assert all(CALLER not in json.dumps(r) and "5551234567" not in json.dumps(r) for r in server.requests)
    # the tool schemas hide the injected runtime argument
    book = next(t for t in first["tools"] if t["function"]["name"] == "book_appointment")
    assert "runtime" not in json.dumps(book["function"]["parameters"])


async def test_a_hosted_model_can_move_an_appointment_by_time_alone(flow_settings: Settings, db: Database) -> None:
    """The schema offers a bare time for "move it to 3 pm", and the tool keeps the
    appointment's day: a model that passes "3 pm" moves it on Tuesday, not today."""
    script = [
        ScriptedReply(tool_calls=[("book_appointment", {"start": "2026-11-24T10:00", "name": "Ana Lopez"})]),
        ScriptedReply(text="You're booked for Tuesday at 10 in the morning."),
        ScriptedReply(tool_calls=[("reschedule_appointment", {"new_start": "3 pm"})]),
        ScriptedReply(text="Done, Tuesday at 3 in the afternoon."),
    ]
    async with FakeOpenAIServer(script) as server, AsyncExitStack() as stack:
        model = build_chat_model(f"openai-compatible:{server.base_url}/fake-model", settings=flow_settings)
        runners = await build_runners(flow_settings, db, stack, clock=fixed_clock, model=model)
        call = Call.open(runners["scheduling"], flow_settings, "scheduling")
        await call.start()
        await call.say("Tuesday at ten please, I'm Ana Lopez")
        assert (await call.say("Can you move it to 3 pm?")).text == "Done, Tuesday at 3 in the afternoon."

    tool_msg = next(m for m in server.requests[3]["messages"] if m["role"] == "tool" and "Done" in m["content"])
    assert tool_msg["content"] == (
        "Done: your appointment on Tuesday the 24th of November at 10 in the morning is now on "
        "Tuesday the 24th of November at 3 in the afternoon."
    )
    async with db.sessionmaker() as session:
        [appt] = (await session.scalars(select(Appointment))).all()
    assert appt.starts_at.astimezone(ZoneInfo("America/New_York")).replace(tzinfo=None) == dt.datetime(2026, 11, 24, 15)
    move = next(t for t in server.requests[0]["tools"] if t["function"]["name"] == "reschedule_appointment")
    described = move["function"]["parameters"]["properties"]["new_start"]["description"]
    assert "only a time like 15:00 keeps the appointment's day" in described
