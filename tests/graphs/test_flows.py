"""The three shipped flows, in text mode with the offline model, on SQLite and PostgreSQL.

Outcomes a user would notice: the appointment row at the right local time, the transfer
request naming a configured target, the message row.
"""

from __future__ import annotations

import datetime as dt
import re
from contextlib import AsyncExitStack
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from dialgraph.graphs.runner import GraphRunner
from dialgraph.graphs.runtime import build_runners
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.models import Appointment, Message
from dialgraph.server.core.settings import Settings
from dialgraph.tools.speech_format import spoken_time
from tests.fakes.graph_calls import Call, fixed_clock

NY = ZoneInfo("America/New_York")
LA = ZoneInfo("America/Los_Angeles")
KOLKATA = ZoneInfo("Asia/Kolkata")
CALLER = "+15551234567"


async def appointments(db: Database) -> list[Appointment]:
    async with db.sessionmaker() as session:
        return list((await session.scalars(select(Appointment).order_by(Appointment.created_at))).all())


async def messages(db: Database) -> list[Message]:
    async with db.sessionmaker() as session:
        return list((await session.scalars(select(Message))).all())


async def test_scheduling_books_at_the_local_time_said(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["scheduling"], flow_settings, "scheduling")
    greeting = await call.start()
    assert "Acme Dental" in greeting.text and greeting.transfer is None and greeting.end is None
    assert "day and time" in (await call.say("Hi, I'd like to book an appointment please")).text
    assert "name" in (await call.say("next friday at ten")).text
    booked = await call.say("It's Ana Lopez")
    assert "Friday the 27th of November at 10 in the morning" in booked.text

    [appt] = await appointments(db)
    assert appt.phone == CALLER and appt.name == "Ana Lopez" and appt.status == "booked"
    assert appt.starts_at.astimezone(NY).replace(tzinfo=None) == dt.datetime(2026, 11, 27, 10, 0)
    assert appt.starts_at == dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.UTC)

    bye = await call.say("No thanks, that's all. Bye!")
    assert bye.end is not None and bye.end.reason == "completed"
    assert "Goodbye" in bye.text


async def test_scheduling_offers_times_and_books_the_one_chosen(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["scheduling"], flow_settings, "scheduling")
    await call.start()
    offer = await call.say("Could I come in on Tuesday? My name is Bob Stone.")
    times = re.findall(r"\b(?:\d{1,2}(?::\d{2})? in the (?:morning|afternoon|evening)|noon)\b", offer.text)
    assert len(times) >= 2, offer.text
    assert (await call.say("Yes please")).text == "Which time would suit you?"
    done = await call.say("The second one, please")
    assert "Booked under the name Bob Stone" in done.text
    [appt] = await appointments(db)
    local = appt.starts_at.astimezone(NY)
    assert local.date() == dt.date(2026, 11, 24)
    assert spoken_time(local.time()) == times[1]


async def test_scheduling_moves_and_cancels(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["scheduling"], flow_settings, "scheduling")
    await call.start()
    await call.say("Book me in for the twenty third of December at half past three, my name is Ana Lopez")
    [appt] = await appointments(db)
    assert appt.starts_at.astimezone(NY).replace(tzinfo=None) == dt.datetime(2026, 12, 23, 15, 30)

    moved = await call.say("Actually can I move my appointment to Monday at half past two?")
    assert "Monday the 23rd of November at 2:30 in the afternoon" in moved.text
    [appt] = await appointments(db)
    assert appt.starts_at.astimezone(NY).replace(tzinfo=None) == dt.datetime(2026, 11, 23, 14, 30)

    listed = await call.say("When is my appointment?")
    assert "Monday the 23rd of November" in listed.text
    cancelled = await call.say("Please cancel it")
    assert "Cancelled" in cancelled.text
    [appt] = await appointments(db)
    assert appt.status == "cancelled"


async def local_starts(db: Database, zone: ZoneInfo) -> list[dt.datetime]:
    return [a.starts_at.astimezone(zone).replace(tzinfo=None) for a in await appointments(db) if a.slot_key]


async def test_scheduling_moves_to_a_day_alone_then_a_time_alone(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["scheduling"], flow_settings, "scheduling")
    await call.start()
    await call.say("Book me in for Tuesday at 10am please, my name is Ana Lopez")
    assert await local_starts(db, NY) == [dt.datetime(2026, 11, 24, 10, 0)]

    thursday = await call.say("Something came up, can you move it to Thursday?")
    assert "is now on Thursday the 26th of November at 10 in the morning" in thursday.text
    assert await local_starts(db, NY) == [dt.datetime(2026, 11, 26, 10, 0)]
    later = await call.say("Can we make it 3 pm instead")
    assert "is now on Thursday the 26th of November at 3 in the afternoon" in later.text
    assert await local_starts(db, NY) == [dt.datetime(2026, 11, 26, 15, 0)]

    closed = await call.say("Actually move it to 8 pm")
    assert closed.text.startswith("We're not open then. The nearest free times are Thursday the 26th of November")
    assert "4:30 in the afternoon" in closed.text and closed.text.endswith("?")
    assert await local_starts(db, NY) == [dt.datetime(2026, 11, 26, 15, 0)]
    assert "Which time" in (await call.say("Yes please")).text
    picked = await call.say("4:30 pm please")
    assert "is now on Thursday the 26th of November at 4:30 in the afternoon" in picked.text
    assert await local_starts(db, NY) == [dt.datetime(2026, 11, 26, 16, 30)]
    assert (await call.say("Nope")).end is not None


async def test_asking_what_is_free_while_moving_offers_times_and_moves_the_one_chosen(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["scheduling"], flow_settings, "scheduling")
    await call.start()
    await call.say("Book me in for Tuesday at 10am please, my name is Ana Lopez")
    assert "move it to" in (await call.say("I need to reschedule")).text
    offer = await call.say("What times do you have on Thursday?")
    assert offer.text.startswith("The nearest free times are Thursday the 26th of November at 9 in the morning")
    assert await local_starts(db, NY) == [dt.datetime(2026, 11, 24, 10, 0)]
    moved = await call.say("The last one")
    assert "is now on Thursday the 26th of November at 10 in the morning" in moved.text
    assert len(await appointments(db)) == 1 and await local_starts(db, NY) == [dt.datetime(2026, 11, 26, 10, 0)]


async def test_moving_to_a_time_alone_keeps_the_local_day_in_kolkata(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    """1 am Tuesday in Kolkata is Monday in UTC, and the offline model's "today" is Friday
    evening there: "3 pm" must mean Tuesday 3 pm, Kolkata time."""
    all_day = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    flow = FlowSettings(timezone="Asia/Kolkata", business_hours=all_day)
    settings = Settings(data_dir=tmp_path, database_url=database_url, flows={"scheduling": flow}, _env_file=None)  # type: ignore[call-arg]
    async with AsyncExitStack() as stack:
        runners = await build_runners(settings, db, stack, clock=fixed_clock)
        call = Call.open(runners["scheduling"], settings, "scheduling")
        await call.start()
        booked = await call.say("Can I book Tuesday at 1 am? It's Asha Rao")
        assert "Tuesday the 24th of November at 1 at night" in booked.text
        [appt] = await appointments(db)
        assert appt.starts_at == dt.datetime(2026, 11, 23, 19, 30, tzinfo=dt.UTC)

        moved = await call.say("Could you move it to 3 pm")
        assert (
            "your appointment on Tuesday the 24th of November at 1 at night is now on "
            "Tuesday the 24th of November at 3 in the afternoon" in moved.text
        )
        assert await local_starts(db, KOLKATA) == [dt.datetime(2026, 11, 24, 15, 0)]
        thursday = await call.say("Sorry, move it to Thursday")
        assert "is now on Thursday the 26th of November at 3 in the afternoon" in thursday.text
        assert await local_starts(db, KOLKATA) == [dt.datetime(2026, 11, 26, 15, 0)]


async def test_scheduling_transfer_then_nobody_free_then_message(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["scheduling"], flow_settings, "scheduling")
    await call.start()
    reply = await call.say("Can I speak to someone at the front desk?")
    assert reply.transfer is not None
    assert (
        reply.transfer.target == "front_desk"
        and reply.transfer.target in flow_settings.flows["scheduling"].transfer_targets
    )
    assert reply.transfer.summary
    assert "front desk" in reply.text

    sorry = await call.signal("transfer_failed", "no-answer")
    assert "nobody" in sorry.text and "message" in sorry.text and sorry.transfer is None
    assert "What message" in (await call.say("Take a message please")).text
    taken = await call.say("Please ask Doctor Smith to call me about my x-ray results")
    assert "Message taken" in taken.text
    [msg] = await messages(db)
    assert msg.from_number == CALLER and "x-ray results" in msg.body and msg.for_whom == "front_desk"


async def test_scheduling_keypad_zero_transfers(runners: dict[str, GraphRunner], flow_settings: Settings) -> None:
    call = Call.open(runners["scheduling"], flow_settings, "scheduling")
    await call.start()
    reply = await call.press("0")
    assert reply.transfer is not None and reply.transfer.target == "front_desk"
    assert "Connecting you to the front desk" in reply.text


async def test_support_answers_escalates_and_takes_messages(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["support"], flow_settings, "support")
    assert "support" in (await call.start()).text
    hours = await call.say("What are your opening hours?")
    assert "Monday to Friday" in hours.text
    bill = await call.say("I think my bill is wrong")
    assert "billing team" in bill.text
    reply = await call.say("Yes please, put me through to billing")
    assert reply.transfer is not None and reply.transfer.target == "billing"
    assert "bill is wrong" in reply.transfer.summary or "opening hours" in reply.transfer.summary

    call2 = Call.open(runners["support"], flow_settings, "support", thread_id="thread-2")
    await call2.start()
    await call2.say("I'd like to leave a message for the technical support team")
    taken = await call2.say("My crown feels loose, please call me back this afternoon")
    assert "Message taken" in taken.text
    [msg] = await messages(db)
    assert "crown feels loose" in msg.body and msg.from_number == CALLER
    assert (await call2.say("That's all, bye")).end is not None


async def test_sales_hot_lead_goes_to_sales(runners: dict[str, GraphRunner], flow_settings: Settings) -> None:
    call = Call.open(runners["sales"], flow_settings, "sales")
    await call.start()
    assert "get started" in (await call.say("We need a booking system for our three clinics")).text
    assert "budget" in (await call.say("As soon as possible, within two weeks")).text
    assert "decision" in (await call.say("About two thousand dollars a month")).text
    offer = await call.say("Yes, I make the decision")
    assert "connect you with our sales team" in offer.text
    reply = await call.say("Yes, connect me now")
    assert reply.transfer is not None and reply.transfer.target == "sales"
    assert "booking system" in reply.transfer.summary and "budget" in reply.transfer.summary


async def test_sales_hot_lead_who_is_not_ready_is_not_put_through(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    for thread, answer in (("thread-1", "Not right now, thanks"), ("thread-2", "I don't know")):
        call = Call.open(runners["sales"], flow_settings, "sales", thread_id=thread)
        await call.start()
        await call.say("We need a booking system for our three clinics")
        await call.say("As soon as possible")
        await call.say("About two thousand dollars a month")
        assert "connect you with our sales team" in (await call.say("Yes, I make the decision")).text
        reply = await call.say(answer)
        assert reply.transfer is None and "book a follow-up call" in reply.text, answer
    assert "day and time" in (await call.say("Yes please")).text


async def test_support_no_to_a_message_then_no_to_anything_else_ends_the_call(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["support"], flow_settings, "support")
    await call.start()
    unknown = await call.say("What is the airspeed velocity of an unladen swallow?")
    assert unknown.text.endswith("Would you like to leave a message?")
    declined = await call.say("No")
    assert declined.text == "No problem. Is there anything else I can help you with?" and declined.end is None
    bye = await call.say("Nope, that's ok")
    assert bye.end is not None and bye.end.reason == "completed" and "Goodbye" in bye.text
    assert await messages(db) == []


async def test_sales_cool_lead_books_a_follow_up(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = Call.open(runners["sales"], flow_settings, "sales")
    await call.start()
    await call.say("I'm just exploring options for a phone system")
    await call.say("Maybe next year")
    await call.say("Not sure yet")
    offer = await call.say("No, my boss decides")
    assert "book a follow-up call" in offer.text
    assert "day and time" in (await call.say("Yes please")).text
    assert "name" in (await call.say("Tuesday at 11am")).text
    booked = await call.say("Bob Stone")
    assert "Tuesday the 24th of November at 11 in the morning" in booked.text
    [appt] = await appointments(db)
    assert appt.starts_at.astimezone(LA).replace(tzinfo=None) == dt.datetime(2026, 11, 24, 11, 0)
    assert appt.purpose == "Sales follow-up" and appt.name == "Bob Stone"
