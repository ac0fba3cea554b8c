"""What a model is told on a call we placed: ``CallFacts`` of an outbound call, the prompt a
hosted model gets (through ChatOpenAI, real HTTP, against the local OpenAI-compatible fake),
the offline model reading the same facts, and the spoken appointment time."""

from __future__ import annotations

import datetime as dt
import json
from contextlib import AsyncExitStack

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from dialgraph.graphs.facts import CallFacts, custom_fields, facts_config, spoken_when
from dialgraph.graphs.flows.base import OPT_OUT_CONFIRM, fill, first_name
from dialgraph.graphs.model import build_chat_model
from dialgraph.graphs.offline_model import OfflineChatModel
from dialgraph.graphs.runtime import build_runners
from dialgraph.graphs.state import DIALOG_ACT, OFFER
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.settings import Settings
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply
from dialgraph.tools.do_not_call import lookup
from tests.fakes.graph_calls import Call, fixed_clock

CALLEE = "+15557654321"
CONTACT = {
    "name": "Jane Doe",
    "purpose": "your demo request for Acme CRM",
    "plan": "Pro",
    "phone": "+15557654321",  # never told to the model, by key
    "alt": "call 555 765 4321",  # nor by looks
}


def test_outbound_facts_and_their_prompt_lines() -> None:
    flow = FlowSettings(company="Acme Software", timezone="America/Los_Angeles")
    contact = {**CONTACT, "appointment": "2026-11-21T10:00"}
    facts = CallFacts.of(flow, now=dt.datetime(2026, 11, 20, 15, 0), direction="outbound", contact=contact)
    assert (facts.contact_name, facts.caller_name, facts.purpose) == ("Jane Doe", "Jane Doe", CONTACT["purpose"])
    assert facts.fields == {"plan": "Pro"}
    assert facts.appointment == dt.datetime(2026, 11, 21, 10, 0)
    prompt = facts.prompt()
    assert "You placed this call to Jane Doe about your demo request for Acme CRM" in prompt
    assert "Their appointment: 2026-11-21T10:00 (tomorrow at 10 in the morning)" in prompt
    assert "What we know of them: plan: Pro." in prompt and "opt_out" in prompt
    assert "555" not in prompt

    inbound = CallFacts.of(flow, now=dt.datetime(2026, 11, 20, 15, 0), contact=contact)
    assert "You placed this call" not in inbound.prompt() and inbound.caller_name is None


def test_contact_values_the_model_never_sees() -> None:
    fields = custom_fields({"to_number": "x", "Mobile": "y", "note": "+44 20 7946 0958", "ok": 3, "n": None, "b": True})
    assert fields == {"ok": "3"}


def test_spoken_appointment_times() -> None:
    today = dt.date(2026, 11, 20)  # a Friday
    assert spoken_when(dt.datetime(2026, 11, 20, 15, 30), today) == "today at 3:30 in the afternoon"
    assert spoken_when(dt.datetime(2026, 11, 21, 10, 0), today) == "tomorrow at 10 in the morning"
    assert spoken_when(dt.datetime(2026, 11, 24, 9, 0), today) == "on Tuesday at 9 in the morning"
    assert spoken_when(dt.datetime(2027, 1, 5, 12, 0), today) == "on Tuesday the 5th of January 2027 at noon"


def test_greeting_templates_fill_and_drop_what_is_missing() -> None:
    assert fill("Hi {name}, this is {company}.", {"name": None, "company": "Acme"}) == "Hi, this is Acme."
    assert fill("Hello {name}!", {"name": ""}) == "Hello!"
    assert fill("your appointment {when}. Keep it?", {"when": None}) == "your appointment. Keep it?"
    assert (
        fill("I'm calling about {purpose}.", {"purpose": "regarding your order"}) == "I'm calling regarding your order."
    )
    assert first_name("Jane Doe") == "Jane" and first_name("Mrs. Sunita Sharma") == "Mrs. Sharma"
    assert first_name("  ") is None


def test_context_from_studio_json_and_twilio_directions() -> None:
    ctx = CallContext(
        call_sid="CA1",
        thread_id="CA1",
        caller=CALLEE,
        called="+15550009999",
        flow="sales",
        flow_settings={"company": "Acme"},  # type: ignore[arg-type]
        direction="outbound-api",
        contact={"name": "Jane"},
    )
    assert ctx.flow_settings.company == "Acme" and ctx.direction == "outbound" and ctx.outbound
    assert ctx.contact == {"name": "Jane"}
    plain = CallContext("CA2", "CA2", CALLEE, "+1555", "sales", FlowSettings())
    assert plain.direction == "inbound" and plain.contact == {}


@tool
def save_lead(need: str) -> str:
    """Save what the lead needs.

    Args:
        need: what they need.
    """
    return "Saved."


async def test_offline_model_reads_outbound_facts_not_the_prompt() -> None:
    model = OfflineChatModel(clock=fixed_clock).bind_tools([save_lead])  # a sales line
    facts = CallFacts(company="Acme Software", direction="outbound", contact_name="Jane", purpose="your trial")
    greeting = AIMessage(
        "Hi Jane ... Do you have a minute?",
        response_metadata={DIALOG_ACT: "greeting", "outbound": True, OFFER: "minute"},
    )
    asked = await model.ainvoke([greeting, HumanMessage("Sorry, who is this?")], facts_config(facts))
    assert asked.content == "I'm calling from Acme Software about your trial. Do you have a minute?"


async def test_hosted_model_is_told_the_outbound_facts_and_never_the_number(
    flow_settings: Settings, db: Database
) -> None:
    script = [
        ScriptedReply(text="It's about the demo you asked for. Do you have a minute?"),
        ScriptedReply(text="Of course.", tool_calls=[("opt_out", {"reason": "asked not to be called"})]),
    ]
    async with FakeOpenAIServer(script) as server, AsyncExitStack() as stack:
        model = build_chat_model(f"openai-compatible:{server.base_url}/fake-model", settings=flow_settings)
        runners = await build_runners(flow_settings, db, stack, clock=fixed_clock, model=model)
        ctx = CallContext(
            call_sid="CAhosted",
            thread_id="CAhosted",
            caller=CALLEE,
            called="+15550009999",
            flow="sales",
            flow_settings=flow_settings.flows["sales"],
            direction="outbound",
            contact=CONTACT,
        )
        call = Call(runners["sales"], ctx)
        greeting = await call.start()
        assert greeting.text.startswith("Hi Jane, this is Acme Software. I'm calling about your demo request")
        assert server.requests == []  # the greeting costs no model call

        await call.say("What is this about?")
        bye = await call.say("Please don't call me again")
        assert bye.text == f"Of course. {OPT_OUT_CONFIRM}"
        assert bye.end is not None and bye.end.reason == "opted_out"
        assert len(server.requests) == 2  # the confirmation is fixed words: no model call after the tool

    system = server.requests[0]["messages"][0]["content"]
    assert "You placed this call to Jane Doe about your demo request for Acme CRM" in system
    assert "What we know of them: plan: Pro." in system and "Caller's name: Jane Doe." in system
    assert "opt_out" in {t["function"]["name"] for t in server.requests[0]["tools"]}
    assert all("5557654321" not in json.dumps(r) and "555 765" not in json.dumps(r) for r in server.requests)
    [entry] = await lookup(db, CALLEE)
    assert entry.call_sid == "CAhosted"
