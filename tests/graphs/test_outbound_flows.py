"""Outbound calls in the shipped flows, in text mode with the offline model, on SQLite and
PostgreSQL: the agent speaks first (by name, saying why it calls), sales qualifies and
books, "not interested" ends politely, an opt-out (spoken, Hinglish, or the opt-out key)
puts the number on the list and ends, and a reminder call keeps, moves or cancels.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from dialgraph.graphs.flows.base import OPT_OUT_CONFIRM
from dialgraph.graphs.offline_policy import KEEP_BYE, NOT_INTERESTED_BYE
from dialgraph.graphs.runner import GraphRunner
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment, Contact, OutboundAudit
from dialgraph.server.core.settings import Settings
from dialgraph.tools.calendar import Calendar
from dialgraph.tools.do_not_call import lookup
from dialgraph.tools.opt_out import KEYPAD_REASON
from tests.fakes.graph_calls import Call, fixed_clock

NY = ZoneInfo("America/New_York")
CALLEE = "+15557654321"


def outbound(
    runner: GraphRunner,
    settings: Settings,
    flow: str,
    contact: dict[str, Any],
    *,
    sid: str = "CAout1",
    callee: str = CALLEE,
    **flow_changes: Any,
) -> Call:
    """An answered outbound call: ``caller`` is the person we called."""
    ctx = CallContext(
        call_sid=sid,
        thread_id=sid,
        caller=callee,
        called="+15550009999",
        flow=flow,
        flow_settings=settings.flows[flow].model_copy(update=flow_changes),
        direction="outbound",
        contact=contact,
    )
    return Call(runner, ctx)


async def audits(db: Database) -> list[OutboundAudit]:
    async with db.sessionmaker() as s:
        return list((await s.scalars(select(OutboundAudit).order_by(OutboundAudit.id))).all())


async def appointments(db: Database) -> list[Appointment]:
    async with db.sessionmaker() as s:
        return list((await s.scalars(select(Appointment).order_by(Appointment.created_at))).all())


# --- sales ------------------------------------------------------------------------------------
async def test_outbound_sales_greets_by_name_and_says_why(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    contact = {"name": "Jane Doe", "purpose": "your demo request for Acme CRM", "plan": "Pro"}
    greeting = await outbound(runners["sales"], flow_settings, "sales", contact).start()
    assert greeting.text == (
        "Hi Jane, this is Acme Software. I'm calling about your demo request for Acme CRM. Do you have a minute?"
    )
    assert greeting.end is None and greeting.transfer is None

    nameless = await outbound(runners["sales"], flow_settings, "sales", {}, sid="CAout2").start()
    assert nameless.text == (
        "Hi, this is Acme Software. I'm calling about how we could help your business. Do you have a minute?"
    )
    phrased = outbound(
        runners["sales"],
        flow_settings,
        "sales",
        {"name": "Dr. Anil Rao", "purpose": "to follow up on your trial"},
        sid="CAout3",
    )
    assert (await phrased.start()).text.startswith(
        "Hi Dr. Rao, this is Acme Software. I'm calling to follow up on your trial."
    )
    custom = outbound(
        runners["sales"],
        flow_settings,
        "sales",
        {"name": "Jane"},
        sid="CAout4",
        outbound_greeting="Hello {name}! {company} here, about {purpose}.",
    )
    assert (await custom.start()).text == "Hello Jane! Acme Software here, about how we could help your business."


async def test_outbound_sales_qualifies_and_books_a_follow_up(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = outbound(runners["sales"], flow_settings, "sales", {"name": "Jane Doe", "purpose": "your demo request"})
    await call.start()
    assert "what are you looking for" in (await call.say("Sure, go ahead")).text
    assert "When are you hoping" in (await call.say("We need a CRM for our sales team of ten people")).text
    assert "budget" in (await call.say("Next month")).text
    assert "decision" in (await call.say("About five thousand dollars")).text
    hot = await call.say("Yes, I decide")
    assert "connect you with our sales team right now, or book a follow-up call" in hot.text
    assert "What day and time" in (await call.say("Let's book a follow-up call")).text
    booked = await call.say("Tuesday at 10am")
    assert "Booked under the name Jane Doe: Tuesday the 24th of November at 10 in the morning" in booked.text
    bye = await call.say("No thanks, that's all")
    assert bye.text == "Thank you for your time. Goodbye!"
    assert bye.end is not None and bye.end.reason == "completed"

    [appt] = await appointments(db)
    assert appt.phone == CALLEE and appt.name == "Jane Doe" and appt.purpose == "Sales follow-up"
    assert appt.starts_at.astimezone(ZoneInfo("America/Los_Angeles")).replace(tzinfo=None) == dt.datetime(
        2026, 11, 24, 10, 0
    )
    async with db.sessionmaker() as s:
        contact = await s.scalar(select(Contact).where(Contact.phone == CALLEE))
    assert contact is not None and "sales team of ten" in (contact.notes or "")
    assert await lookup(db, CALLEE) == []


async def test_not_interested_ends_politely(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = outbound(runners["sales"], flow_settings, "sales", {"name": "Jane Doe"})
    await call.start()
    reply = await call.say("Sorry, I'm not interested")
    assert reply.text == NOT_INTERESTED_BYE
    assert reply.end is not None and reply.end.reason == "not_interested"

    other = outbound(runners["sales"], flow_settings, "sales", {"name": "Raj"}, sid="CAout2")
    await other.start()
    no_thanks = await other.say("No thanks")
    assert no_thanks.end is not None and no_thanks.end.reason == "not_interested"
    assert await lookup(db, CALLEE) == []  # not interested is not an opt-out


async def test_busy_now_is_offered_a_follow_up(runners: dict[str, GraphRunner], flow_settings: Settings) -> None:
    call = outbound(runners["sales"], flow_settings, "sales", {"name": "Jane Doe"})
    await call.start()
    later = await call.say("I'm busy right now")
    assert later.text == "No problem. Would you like to book a better time for a follow-up call?" and later.end is None
    assert "What day and time" in (await call.say("Yes please")).text


# --- opt-out ----------------------------------------------------------------------------------
async def test_spoken_opt_out_adds_the_number_and_ends(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = outbound(runners["sales"], flow_settings, "sales", {"name": "Jane Doe"}, sid="CAoptout")
    await call.start()
    await call.say("Sure")
    reply = await call.say("Actually, please stop calling me. Take me off your list.")
    assert reply.text == OPT_OUT_CONFIRM
    assert reply.end is not None and reply.end.reason == "opted_out"

    [entry] = await lookup(db, CALLEE)
    assert entry.source == "opt_out" and entry.call_sid == "CAoptout" and entry.categories is None
    [audit] = await audits(db)
    assert (audit.decision, audit.rule, audit.to_number, audit.call_sid) == (
        "opted_out",
        "opt_out.spoken",
        CALLEE,
        "CAoptout",
    )


async def test_hinglish_opt_out(runners: dict[str, GraphRunner], flow_settings: Settings, db: Database) -> None:
    call = outbound(runners["sales"], flow_settings, "sales", {"name": "Priya"}, callee="+919876543210")
    await call.start()
    reply = await call.say("Mujhe call mat karo")
    assert reply.text == OPT_OUT_CONFIRM and reply.end is not None and reply.end.reason == "opted_out"
    assert [e.source for e in await lookup(db, "+919876543210")] == ["opt_out"]

    # an inbound caller can opt out too, on any shipped flow
    inbound = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="in-1", caller="+919812345678")
    await inbound.start()
    again = await inbound.say("dobara call mat karna")
    assert again.end is not None and again.end.reason == "opted_out"
    assert [e.source for e in await lookup(db, "+919812345678")] == ["opt_out"]


async def test_opt_out_digit(runners: dict[str, GraphRunner], flow_settings: Settings, db: Database) -> None:
    call = outbound(runners["sales"], flow_settings, "sales", {"name": "Jane Doe"}, sid="CAkey", opt_out_digit="9")
    await call.start()
    reply = await call.press("9")
    assert reply.text == OPT_OUT_CONFIRM and reply.end is not None and reply.end.reason == "opted_out"
    [entry] = await lookup(db, CALLEE)
    assert entry.reason == KEYPAD_REASON and entry.call_sid == "CAkey"
    assert [a.rule for a in await audits(db)] == ["opt_out.keypad"]

    # the same key on a flow without an opt-out digit does nothing of the sort
    plain = outbound(runners["sales"], flow_settings, "sales", {"name": "Raj"}, sid="CAkey2", callee="+15557650000")
    await plain.start()
    pressed = await plain.press("9")
    assert pressed.end is None and pressed.text != OPT_OUT_CONFIRM
    assert await lookup(db, "+15557650000") == []


async def test_opting_out_twice_keeps_one_entry(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    for sid in ("CAfirst", "CAsecond"):
        call = outbound(runners["support"], flow_settings, "support", {"name": "Jane"}, sid=sid)
        await call.start()
        assert (await call.say("Don't call me again")).end is not None
    [entry] = await lookup(db, CALLEE)
    assert entry.call_sid == "CAfirst"


# --- scheduling reminder ----------------------------------------------------------------------
async def reminder(runners: dict[str, GraphRunner], settings: Settings, db: Database) -> Call:
    cal = Calendar(db, settings.flows["scheduling"], clock=fixed_clock)
    outcome = await cal.book(CALLEE, dt.datetime(2026, 11, 23, 10, 0, tzinfo=NY), name="Ana Lopez")
    assert outcome.status == "booked"
    contact = {"name": "Ana Lopez", "appointment": "2026-11-23T10:00"}
    call = outbound(runners["scheduling"], settings, "scheduling", contact)
    greeting = await call.start()
    assert greeting.text == (
        "Hi Ana, this is Acme Dental. I'm calling to remind you of your appointment on Monday at 10 in the morning. "
        "Would you like to keep it, move it, or cancel it?"
    )
    return call


async def local_starts(db: Database) -> list[tuple[dt.datetime, str]]:
    return [(a.starts_at.astimezone(NY).replace(tzinfo=None), a.status) for a in await appointments(db)]


async def test_reminder_keep(runners: dict[str, GraphRunner], flow_settings: Settings, db: Database) -> None:
    call = await reminder(runners, flow_settings, db)
    kept = await call.say("Yes, I'll keep it, thanks")
    assert kept.text == KEEP_BYE and kept.end is not None and kept.end.reason == "completed"
    assert await local_starts(db) == [(dt.datetime(2026, 11, 23, 10, 0), "booked")]


async def test_reminder_move(runners: dict[str, GraphRunner], flow_settings: Settings, db: Database) -> None:
    call = await reminder(runners, flow_settings, db)
    assert (await call.say("Can I move it?")).text == "Sure. What day and time would you like to move it to?"
    moved = await call.say("Tuesday at 2 pm")
    assert "is now on Tuesday the 24th of November at 2 in the afternoon" in moved.text
    assert await local_starts(db) == [(dt.datetime(2026, 11, 24, 14, 0), "booked")]


async def test_reminder_cancel(runners: dict[str, GraphRunner], flow_settings: Settings, db: Database) -> None:
    call = await reminder(runners, flow_settings, db)
    cancelled = await call.say("Please cancel it")
    assert "Cancelled your appointment on Monday the 23rd of November at 10 in the morning" in cancelled.text
    assert await local_starts(db) == [(dt.datetime(2026, 11, 23, 10, 0), "cancelled")]
    bye = await call.say("No, that's all")
    assert bye.end is not None and bye.text == "Thank you for your time. Goodbye!"


async def test_reminder_cannot_make_it_asks_move_or_cancel(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = await reminder(runners, flow_settings, db)
    asked = await call.say("No, I can't make it")
    assert asked.text == "No problem. Would you like to move it to another time, or cancel it?"
    assert "What day and time" in (await call.say("Move it please")).text
