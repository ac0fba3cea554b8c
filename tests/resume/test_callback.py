"""A caller who rings back is greeted with what we know: first name, an offer to hear or
change their next appointment (never its details: caller ID can be spoofed), or what their
last call left open; only from a call on the same flow; the new call gets its own thread
(SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses

from langchain_core.messages import AIMessage, HumanMessage

from dialgraph.graphs.flows.base import OFFER_APPOINTMENT
from dialgraph.graphs.runner import GraphRunner, content_text
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.tools.contacts import update_contact
from tests.fakes.graph_calls import Call

CALLER = "+15551234567"


async def messages_of(runner: GraphRunner, thread_id: str) -> list:
    state = await runner.graph.aget_state({"configurable": {"thread_id": thread_id}})
    return list(state.values.get("messages", []))


def ring_back(first: Call, thread_id: str, *, on: tuple[GraphRunner, Settings, str] | None = None) -> Call:
    """The same caller again, linked to ``first``'s thread; ``on`` = another flow's line."""
    ctx = dataclasses.replace(
        first.ctx, call_sid=f"CA{thread_id}", thread_id=thread_id, previous_thread_id=first.ctx.thread_id
    )
    if on is None:
        return Call(first.runner, ctx)
    runner, settings, flow = on
    return Call(runner, dataclasses.replace(ctx, flow=flow, flow_settings=settings.flows[flow]))


async def book_as_ana(runners: dict[str, GraphRunner], flow_settings: Settings, thread_id: str) -> Call:
    first = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id=thread_id, caller=CALLER)
    await first.start()
    await first.say("Hi, I'd like to book an appointment please")
    await first.say("next friday at ten")
    booked = await first.say("It's Ana Lopez")
    assert "Friday the 27th of November at 10 in the morning" in booked.text
    return first


async def test_caller_ringing_back_is_offered_their_appointment_without_its_details(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    first = await book_as_ana(runners, flow_settings, "first")
    before = await messages_of(first.runner, "first")

    second = ring_back(first, "second")
    greeting = await second.start()
    assert greeting.text == f"Welcome back, Ana. {OFFER_APPOINTMENT}"
    assert "Lopez" not in greeting.text and "27th" not in greeting.text  # nothing a spoofer could learn
    # Its own thread, linked to the old one; the old thread is untouched.
    state = await second.runner.graph.aget_state({"configurable": {"thread_id": "second"}})
    assert [content_text(m) for m in state.values["messages"]] == [greeting.text]
    assert state.values["callback"]["previous_thread_id"] == "first"
    assert state.values["caller_name"] == "Ana Lopez"
    assert await messages_of(first.runner, "first") == before
    # The details are read when the caller asks for them.
    reply = await second.say("Yes please")
    assert "27th of November" in reply.text


async def test_change_it_after_the_offer_moves_the_appointment(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    first = await book_as_ana(runners, flow_settings, "t-move")
    second = ring_back(first, "t-move-2")
    assert (await second.start()).text.endswith(OFFER_APPOINTMENT)
    asked = await second.say("I'd like to change it")
    assert "27th" not in asked.text and asked.text.rstrip().endswith("?")
    moved = await second.say("Monday at eleven")
    assert "now on Monday the 23rd of November at 11" in moved.text


async def test_nothing_is_recalled_from_a_call_on_another_flow(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    first = await book_as_ana(runners, flow_settings, "t-dental")
    sales = ring_back(first, "t-sales", on=(runners["sales"], flow_settings, "sales"))
    greeting = (await sales.start()).text
    assert "appointment" not in greeting.lower() and "27th" not in greeting
    # The caller's name was given on the dental line only (no contact row): not used on sales.
    normal = (await Call.open(runners["sales"], flow_settings, "sales", thread_id="t-sales-new").start()).text
    assert greeting == normal
    # A contact row (the CRM) is greeted by first name on any line, still without the booking.
    await update_contact(db, CALLER, name="Ana Lopez")
    again = ring_back(first, "t-sales-2", on=(runners["sales"], flow_settings, "sales"))
    assert (await again.start()).text == "Welcome back, Ana. How can I help?"


async def test_an_open_topic_is_offered_when_nothing_was_booked(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    first = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="t-open", caller=CALLER)
    await first.start()
    asked = await first.say("Hi, I'd like to book an appointment please")
    assert asked.text.rstrip().endswith("?")  # ... and the caller hung up without answering

    greeting = await ring_back(first, "t-open-2").start()
    assert greeting.text == (
        "Welcome back. Last time we didn't finish booking an appointment. Would you like to carry on with that?"
    )


async def test_a_known_contact_is_named_even_without_an_earlier_thread(
    runners: dict[str, GraphRunner], flow_settings: Settings, db
) -> None:
    await update_contact(db, CALLER, name="Ben Ortiz")
    call = Call.open(runners["support"], flow_settings, "support", thread_id="t-contact", caller=CALLER)
    assert (await call.start()).text == "Welcome back, Ben. How can I help?"  # first name only


async def test_strangers_finished_calls_and_hidden_numbers_get_the_normal_greeting(
    runners: dict[str, GraphRunner], flow_settings: Settings, db
) -> None:
    normal = (await Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="x0").start()).text
    assert normal.startswith("Thank you for calling Acme Dental")

    # A previous call that ended with the agent's goodbye left nothing open.
    first = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="t-done", caller=CALLER)
    await first.start()
    bye = await first.say("No thanks, that's all. Bye!")
    assert bye.end is not None
    assert (await ring_back(first, "t-done-2").start()).text == normal

    # A withheld number owns nothing, even when a contact row matches its spelling.
    await update_contact(db, "+266696687", name="Somebody")
    hidden = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="x1", caller="+266696687")
    assert (await hidden.start()).text == normal


async def test_the_recalled_greeting_is_checkpointed_like_any_greeting(
    runners: dict[str, GraphRunner], flow_settings: Settings, db
) -> None:
    await update_contact(db, CALLER, name="Ana")
    call = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="t-ck", caller=CALLER)
    await call.start()
    await call.say("I'd like to book an appointment")
    msgs = await messages_of(call.runner, "t-ck")
    assert isinstance(msgs[0], AIMessage) and msgs[0].response_metadata["dialog_act"] == "greeting"
    assert [type(m) for m in msgs[:2]] == [AIMessage, HumanMessage]
