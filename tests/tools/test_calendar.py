"""Calendar tools on SQLite and PostgreSQL, called through a real ToolNode graph."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select

from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.models import Appointment
from dialgraph.tools import build_tools
from dialgraph.tools.calendar import Calendar
from dialgraph.tools.speech_format import spoken_time
from dialgraph.tools.timeparse import RequestedTime
from tests.fakes.tool_graph import FixedClock, ToolGraph, call_context

ALICE, BOB = "+15550100101", "+15550100202"
ALL_DAY = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
KOLKATA = FlowSettings(timezone="Asia/Kolkata", business_hours=ALL_DAY)
NEW_YORK = FlowSettings(timezone="America/New_York")  # Mon-Fri 09:00-17:00, 30 min slots
MONDAY_8AM_NY = dt.datetime(2026, 11, 23, 13, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY_8AM_NY)


@pytest.fixture
def graph(db: Database, clock: FixedClock) -> ToolGraph:
    return ToolGraph(build_tools(db=db, clock=clock).values())


async def appointments(db: Database) -> list[Appointment]:
    async with db.sessionmaker() as s:
        return list(await s.scalars(select(Appointment).order_by(Appointment.starts_at)))


async def booked(db: Database) -> list[Appointment]:
    return [a for a in await appointments(db) if a.slot_key is not None]


async def test_late_night_booking_in_kolkata_lands_on_utc_and_reads_back_local(db: Database, graph: ToolGraph) -> None:
    ctx = call_context(ALICE, KOLKATA)
    text = await graph.text(ctx, "book_appointment", start="2026-11-27T23:30", name="Asha", purpose="a cleaning")
    assert text == "Booked under the name Asha: Friday the 27th of November at 11:30 at night, for a cleaning."
    [row] = await appointments(db)
    assert row.starts_at == dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.UTC)
    assert row.ends_at == dt.datetime(2026, 11, 27, 18, 30, tzinfo=dt.UTC)
    assert row.phone == ALICE and row.call_sid == ctx.call_sid
    assert row.slot_key == "default|2026-11-27T18:00:00+00:00"
    listed = await graph.text(call_context(ALICE, KOLKATA), "list_my_appointments")
    assert listed == "You have one appointment: Friday the 27th of November at 11:30 at night, for a cleaning."


async def test_outside_hours_books_nothing_and_offers_the_nearest_slots(db: Database, graph: ToolGraph) -> None:
    text = await graph.text(call_context(ALICE, NEW_YORK), "book_appointment", start="2026-11-27T19:00")
    assert text == (
        "We're not open then. The nearest free times are Friday the 27th of November at "
        "3:30 in the afternoon, 4 in the afternoon or 4:30 in the afternoon."
    )
    assert await appointments(db) == []


async def test_saturday_offers_friday_afternoon_and_monday_morning(db: Database, graph: ToolGraph) -> None:
    text = await graph.text(call_context(ALICE, NEW_YORK), "find_free_slots", when="2026-11-28T13:00", count=2)
    # 13:00 Saturday: Friday 16:30 is 20.5 h away, Monday 9:00 is 44 h away.
    assert (
        text == "The nearest free times are Friday the 27th of November at 4 in the afternoon or 4:30 in the afternoon."
    )


async def test_a_date_lists_that_days_first_free_slots(db: Database, graph: ToolGraph) -> None:
    await graph.text(call_context(BOB, NEW_YORK), "book_appointment", start="2026-11-25T09:00")
    text = await graph.text(call_context(ALICE, NEW_YORK), "find_free_slots", when="2026-11-25")
    assert text == (
        "The nearest free times are Wednesday the 25th of November at "
        "9:30 in the morning, 10 in the morning or 10:30 in the morning."
    )
    needs_time = await graph.text(call_context(ALICE, NEW_YORK), "book_appointment", start="2026-11-25")
    assert needs_time.startswith("Nothing booked yet: I need a time as well as the day.")
    assert len(await appointments(db)) == 1


async def test_taken_past_and_off_grid_times_are_refused_with_alternatives(db: Database, graph: ToolGraph) -> None:
    ctx_a, ctx_b = call_context(ALICE, NEW_YORK), call_context(BOB, NEW_YORK)
    assert (await graph.text(ctx_a, "book_appointment", start="2026-11-24T10:00")).startswith("Booked:")
    again = await graph.text(ctx_a, "book_appointment", start="2026-11-24T10:00")
    assert again.startswith("You already have that appointment: Tuesday the 24th of November at 10 in the morning")
    taken = await graph.text(ctx_b, "book_appointment", start="2026-11-24T10:00")
    assert taken == (
        "That time is already taken. The nearest free times are Tuesday the 24th of November at "
        "9:30 in the morning, 10:30 in the morning or 11 in the morning."
    )
    past = await graph.text(ctx_b, "book_appointment", start="2026-11-23T07:00")
    assert past.startswith(
        "That time has already passed. The nearest free times are Monday the 23rd of November at 9 in the morning"
    )
    off_grid = await graph.text(ctx_b, "book_appointment", start="2026-11-24T10:10")
    assert off_grid.startswith("Appointments start at set times")
    assert "10:30 in the morning" in off_grid
    assert [(a.phone, a.starts_at.hour) for a in await appointments(db)] == [(ALICE, 15)]


async def test_a_bare_time_or_day_keeps_the_rest_of_the_local_start(db: Database, graph: ToolGraph) -> None:
    # Tuesday 01:00 in Kolkata is Monday 19:30 UTC, and the clock says Monday 18:30 there:
    # "3 pm" must land on the appointment's local day, neither UTC's day nor today.
    ctx = call_context(ALICE, KOLKATA)
    await graph.text(ctx, "book_appointment", start="2026-11-24T01:00", purpose="a check-up")
    moved = await graph.text(ctx, "reschedule_appointment", new_start="3 pm")
    assert moved == (
        "Done: your appointment on Tuesday the 24th of November at 1 at night is now on "
        "Tuesday the 24th of November at 3 in the afternoon, for a check-up."
    )
    [row] = await appointments(db)
    assert row.starts_at == dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)
    thursday = await graph.text(ctx, "reschedule_appointment", new_start="2026-11-26")
    assert thursday.endswith("is now on Thursday the 26th of November at 3 in the afternoon, for a check-up.")
    await graph.text(ctx, "reschedule_appointment", new_start="T01:00")
    await graph.text(ctx, "reschedule_appointment", new_start="2026-11-24")
    [row] = await appointments(db)
    assert row.starts_at == dt.datetime(2026, 11, 23, 19, 30, tzinfo=dt.UTC)  # Tuesday 01:00 again
    both = await graph.text(ctx, "reschedule_appointment", new_start="2026-11-25T09:30")
    assert both.endswith("is now on Wednesday the 25th of November at 9:30 in the morning, for a check-up.")


async def test_a_bare_time_that_is_closed_or_past_is_refused_with_that_days_slots(
    db: Database, graph: ToolGraph, clock: FixedClock
) -> None:
    ctx = call_context(ALICE, NEW_YORK)
    await graph.text(ctx, "book_appointment", start="2026-11-24T10:00")
    closed = await graph.text(ctx, "reschedule_appointment", new_start="20:00")
    assert closed == (
        "We're not open then. The nearest free times are Tuesday the 24th of November at "
        "3:30 in the afternoon, 4 in the afternoon or 4:30 in the afternoon."
    )
    await graph.text(ctx, "reschedule_appointment", new_start="15:00")
    clock.now = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)  # Tuesday noon in New York
    past = await graph.text(ctx, "reschedule_appointment", new_start="9 am")
    assert past == (
        "That time has already passed. The nearest free times are Tuesday the 24th of November at "
        "12:30 in the afternoon, 1 in the afternoon or 1:30 in the afternoon."
    )
    [row] = await appointments(db)
    assert row.starts_at.astimezone(NEW_YORK.zone).replace(tzinfo=None) == dt.datetime(2026, 11, 24, 15, 0)


async def test_buffer_keeps_slots_apart(db: Database, clock: FixedClock) -> None:
    flow = FlowSettings(timezone="UTC", slot_minutes=30, buffer_minutes=15)
    cal = Calendar(db, flow, clock=clock)
    assert [s.strftime("%H:%M") for s in cal.grid(dt.date(2026, 11, 24))][:4] == ["09:00", "09:45", "10:30", "11:15"]
    # A row booked under other settings (09:50-10:20) blocks 09:45 and, with the buffer, 10:30.
    async with db.sessionmaker() as s, s.begin():
        start = dt.datetime(2026, 11, 24, 9, 50, tzinfo=dt.UTC)
        s.add(
            Appointment(phone=BOB, starts_at=start, ends_at=start + dt.timedelta(minutes=30), slot_key="default|legacy")
        )
    near = RequestedTime(at=dt.datetime(2026, 11, 24, 9, 45, tzinfo=dt.UTC), has_time=True)
    slots = await cal.free_slots(near, 3)
    assert [s.strftime("%H:%M") for s in slots] == ["09:00", "11:15", "12:00"]
    outcome = await cal.book(ALICE, dt.datetime(2026, 11, 24, 10, 30, tzinfo=dt.UTC))
    assert outcome.status == "taken"


async def test_two_callers_booking_one_slot_at_once_leave_one_row(db: Database, graph: ToolGraph) -> None:
    for hour in ("10:00", "11:00", "14:30"):
        start = f"2026-11-26T{hour}"
        answers = await asyncio.gather(
            graph.text(call_context(ALICE, NEW_YORK), "book_appointment", start=start),
            graph.text(call_context(BOB, NEW_YORK), "book_appointment", start=start),
        )
        assert sum(a.startswith("Booked") for a in answers) == 1, answers
        loser = next(a for a in answers if not a.startswith("Booked"))
        assert loser.startswith(("That time is already taken.", "Sorry, that slot was just taken")), loser
        offered = loser.split("The nearest free times are", 1)[1]
        assert offered and spoken_time(dt.time.fromisoformat(hour)) not in offered
    rows = await booked(db)
    assert len(rows) == 3
    assert len({r.slot_key for r in rows}) == 3


async def test_constraint_wins_when_the_check_cannot_see_the_other_booking(db: Database, clock: FixedClock) -> None:
    # A concurrent booking committed between our overlap check and our insert looks like a
    # row holding the slot's key that the check did not select: simulate exactly that.
    cal = Calendar(db, NEW_YORK, clock=clock)
    start = dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)
    far = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    async with db.sessionmaker() as s, s.begin():
        s.add(Appointment(phone=BOB, starts_at=far, ends_at=far, slot_key=cal.slot_key(start)))
    outcome = await cal.book(ALICE, start)
    assert outcome.status == "raced"
    assert len(outcome.alternatives) == 3
    assert [a.phone for a in await appointments(db)] == [BOB]


async def test_caller_b_cannot_cancel_or_move_callers_a_appointment(db: Database, graph: ToolGraph) -> None:
    await graph.text(call_context(ALICE, NEW_YORK), "book_appointment", start="2026-11-24T10:00")
    [row] = await appointments(db)
    ctx_b = call_context(BOB, NEW_YORK)
    # The model passes Alice's id, and even tries to smuggle her number in the arguments.
    for args in ({"appointment_id": row.id}, {"appointment_id": row.id[:8]}, {"appointment_id": "2026-11-24T10:00"}):
        cancel = await graph.text(ctx_b, "cancel_appointment", **args, caller=ALICE, phone=ALICE)
        assert cancel == "I couldn't find an upcoming appointment for this caller that matches."
        move = await graph.text(ctx_b, "reschedule_appointment", new_start="2026-11-24T11:00", **args)
        assert move == "I couldn't find an upcoming appointment for this caller that matches."
    assert (
        await graph.text(ctx_b, "cancel_appointment")
        == "I couldn't find an upcoming appointment for this caller that matches."
    )
    assert await graph.text(ctx_b, "list_my_appointments") == "You have no upcoming appointments."
    [still] = await appointments(db)
    assert still.phone == ALICE and still.slot_key is not None and still.starts_at == row.starts_at


async def test_reschedule_then_cancel_frees_the_slots(db: Database, graph: ToolGraph) -> None:
    ctx_a = call_context(ALICE, NEW_YORK)
    await graph.text(ctx_a, "book_appointment", start="2026-11-24T10:00", purpose="a check-up")
    [row] = await appointments(db)
    moved = await graph.text(ctx_a, "reschedule_appointment", new_start="2026-11-24T10:30")
    assert moved == (
        "Done: your appointment on Tuesday the 24th of November at 10 in the morning is now on "
        "Tuesday the 24th of November at 10:30 in the morning, for a check-up."
    )
    [after] = await appointments(db)
    assert after.id == row.id and after.starts_at == dt.datetime(2026, 11, 24, 15, 30, tzinfo=dt.UTC)
    ctx_b = call_context(BOB, NEW_YORK)
    assert (await graph.text(ctx_b, "book_appointment", start="2026-11-24T10:00")).startswith("Booked")
    cancelled = await graph.text(ctx_a, "cancel_appointment", appointment_id="2026-11-24")
    assert (
        cancelled
        == "Cancelled your appointment on Tuesday the 24th of November at 10:30 in the morning, for a check-up."
    )
    assert (await graph.text(ctx_b, "book_appointment", start="2026-11-24T10:30")).startswith("Booked")
    rows = await appointments(db)
    assert [(r.phone, r.status, r.slot_key is None) for r in rows] == [
        (BOB, "booked", False),
        (ALICE, "cancelled", True),
        (BOB, "booked", False),
    ]


async def test_hidden_caller_id_owns_nothing(db: Database, graph: ToolGraph) -> None:
    for caller in ("anonymous", "+266696687", ""):
        text = await graph.text(call_context(caller, NEW_YORK), "book_appointment", start="2026-11-24T10:00")
        assert "number is hidden" in text
    assert await appointments(db) == []


async def test_unreadable_time_is_explained_not_raised(db: Database, graph: ToolGraph) -> None:
    text = await graph.text(call_context(ALICE, NEW_YORK), "book_appointment", start="whenever you like")
    assert text.startswith("I couldn't read the time 'whenever you like'.")
    spoken = await graph.text(call_context(ALICE, NEW_YORK), "find_free_slots", when="tomorrow at 2pm", count=1)
    assert spoken == "The nearest free times are Tuesday the 24th of November at 2 in the afternoon."


async def test_dst_day_grid_skips_the_missing_hour(db: Database, clock: FixedClock) -> None:
    flow = FlowSettings(timezone="America/New_York", business_hours=ALL_DAY, slot_minutes=60)
    cal = Calendar(db, flow, clock=clock)
    starts = cal.grid(dt.date(2027, 3, 14))
    assert len(starts) == 23 and all(s.hour != 2 for s in starts)
    utc = [s.astimezone(dt.UTC) for s in starts]
    assert all(b - a == dt.timedelta(hours=1) for a, b in zip(utc, utc[1:], strict=False))
