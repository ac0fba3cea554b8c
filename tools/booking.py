"""Calendar tools for the model: thin wrappers over ``tools.calendar.Calendar`` that read the
caller and the flow from the run context and answer in words a caller understands."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.tools.calendar import AppointmentView, Calendar, Outcome
from dialgraph.tools.runtime import NO_CALLER_ID, Clock, answer, caller_number, clean, given, sorry, speak_errors
from dialgraph.tools.speech_format import spoken_date, spoken_datetime, spoken_list, spoken_time
from dialgraph.tools.timeparse import (
    NewStart,
    RequestedTime,
    TimeParseError,
    parse_time_of_day,
    parse_when,
    parse_when_lenient,
)

_UNREADABLE = (
    "I couldn't read the time {text!r}. Pass a local date-time like 2026-11-27T14:30, or a date like 2026-11-27."
)

_REFUSALS = {
    "past": "That time has already passed.",
    "closed": "We're not open then.",
    "off_grid": "Appointments start at set times, and that exact time isn't one of them.",
    "too_far": "That's too far ahead to book.",
    "taken": "That time is already taken.",
    "raced": "Sorry, that slot was just taken by someone else.",
}


async def read_when(text: str, cal: Calendar) -> RequestedTime:
    """ISO first (cheap); natural language through dateparser in a thread."""
    try:
        return parse_when(text, cal.zone)
    except TimeParseError:
        return await asyncio.to_thread(parse_when_lenient, text, cal.zone, now=cal.now())


async def read_new_start(text: str, cal: Calendar) -> NewStart:
    """Where to move an appointment. A bare time ("15:00", "3 pm") keeps the appointment's
    day and a bare date keeps its time of day: read as a whole point, "3 pm" would mean
    today, whatever day the appointment is on."""
    try:
        return NewStart(time=parse_time_of_day(text))
    except TimeParseError:
        return NewStart.of(await read_when(text, cal))


def describe_slots(slots: list[dt.datetime], today: dt.date) -> str:
    """ "Tuesday the 5th of May at 9 in the morning or 9:30 in the morning, or Wednesday..." """
    by_day: dict[dt.date, list[str]] = {}
    for slot in slots:
        by_day.setdefault(slot.date(), []).append(spoken_time(slot.time()))
    days = [
        f"{spoken_date(day, today=today)} at {spoken_list(times, conjunction='or')}" for day, times in by_day.items()
    ]
    return spoken_list(days, conjunction="or")


def offer(slots: tuple[dt.datetime, ...] | list[dt.datetime], today: dt.date) -> str:
    if not slots:
        return "I don't see any free times in the three weeks around then."
    return f"The nearest free times are {describe_slots(list(slots), today)}."


def describe_appointment(cal: Calendar, appt: AppointmentView) -> str:
    text = spoken_datetime(appt.starts_at.astimezone(cal.zone), today=cal.today())
    return f"{text}, for {appt.purpose}" if appt.purpose else text


def describe_outcome(cal: Calendar, outcome: Outcome) -> str:
    today = cal.today()
    appt = outcome.appointment
    if outcome.status == "booked" and appt:
        who = f" under the name {appt.name}" if appt.name else ""
        return f"Booked{who}: {describe_appointment(cal, appt)}."
    if outcome.status == "moved" and appt and outcome.previous:
        old = spoken_datetime(outcome.previous.starts_at.astimezone(cal.zone), today=today)
        return f"Done: your appointment on {old} is now on {describe_appointment(cal, appt)}."
    if outcome.status == "cancelled" and appt:
        return f"Cancelled your appointment on {describe_appointment(cal, appt)}."
    if outcome.status == "yours" and appt:
        return f"You already have that appointment: {describe_appointment(cal, appt)}."
    if outcome.status == "not_found":
        return "I couldn't find an upcoming appointment for this caller that matches."
    if outcome.status == "ambiguous":
        return (
            f"There's more than one appointment then: {describe_slots(list(outcome.alternatives), today)}. Which one?"
        )
    return f"{_REFUSALS.get(outcome.status, 'That time is not available.')} {offer(outcome.alternatives, today)}"


def calendar_tools(*, db: Database, clock: Clock) -> list[BaseTool]:
    """find_free_slots, book_appointment, reschedule_appointment, cancel_appointment,
    list_my_appointments."""

    def calendar(runtime: ToolRuntime[CallContext]) -> Calendar:
        return Calendar(db, runtime.context.flow_settings, clock=clock)

    @tool(parse_docstring=True)
    async def find_free_slots(when: str, runtime: ToolRuntime[CallContext], count: int = 3) -> str:
        """Find free appointment times nearest a requested time.

        Args:
            when: local date-time in the business's time zone, ISO like 2026-11-27T14:30, or a date 2026-11-27.
            count: how many times to offer (1-6).
        """
        cal = calendar(runtime)

        async def run() -> str:
            try:
                near = await read_when(when, cal)
            except TimeParseError:
                return _UNREADABLE.format(text=when)
            slots = await cal.free_slots(near, max(1, min(count, 6)))
            return offer(slots, cal.today())

        return await speak_errors("find_free_slots", runtime.context, run, sorry("check the calendar"))

    async def book(ctx: CallContext, cal: Calendar, start: str, name: str | None, purpose: str | None) -> str:
        phone = caller_number(ctx)
        if phone is None:
            return NO_CALLER_ID

        async def run() -> str:
            try:
                wanted = await read_when(start, cal)
            except TimeParseError:
                return _UNREADABLE.format(text=start)
            if not wanted.has_time:
                slots = await cal.free_slots(wanted)
                return f"Nothing booked yet: I need a time as well as the day. {offer(slots, cal.today())}"
            outcome = await cal.book(
                phone, wanted.at, name=clean(name, 128), purpose=clean(purpose), call_sid=ctx.call_sid
            )
            return describe_outcome(cal, outcome)

        return await speak_errors("book_appointment", ctx, run, sorry("book that"))

    @tool(parse_docstring=True)
    async def book_appointment(
        start: str, runtime: ToolRuntime[CallContext], name: str | None = None, purpose: str | None = None
    ) -> Command[Any] | str:
        """Book an appointment for the caller. If the time is not free, nothing is booked and the nearest free times are given.

        Args:
            start: local start date-time, ISO like 2026-11-27T14:30.
            name: the caller's name, if they gave one.
            purpose: what the appointment is for, in a few words.
        """
        words = await book(runtime.context, calendar(runtime), start, name, purpose)
        return answer(runtime, words, {"caller_name": given(name)})

    @tool(parse_docstring=True)
    async def reschedule_appointment(
        new_start: str, runtime: ToolRuntime[CallContext], appointment_id: str | None = None
    ) -> str:
        """Move one of the caller's upcoming appointments to a new time. If that time is not free, nothing moves and the nearest free times are given.

        Args:
            new_start: new local start, ISO like 2026-11-27T14:30; only a time like 15:00 keeps the appointment's day, only a date like 2026-11-27 keeps its time of day.
            appointment_id: which appointment: its id, or its current local date-time or date; omit for the caller's next appointment.
        """
        ctx = runtime.context
        phone = caller_number(ctx)
        if phone is None:
            return NO_CALLER_ID
        cal = calendar(runtime)

        async def run() -> str:
            try:
                wanted = await read_new_start(new_start, cal)
            except TimeParseError:
                return _UNREADABLE.format(text=new_start)
            return describe_outcome(cal, await cal.reschedule(phone, wanted, appointment_id))

        return await speak_errors("reschedule_appointment", ctx, run, sorry("move that appointment"))

    @tool(parse_docstring=True)
    async def cancel_appointment(runtime: ToolRuntime[CallContext], appointment_id: str | None = None) -> str:
        """Cancel one of the caller's upcoming appointments.

        Args:
            appointment_id: which appointment: its id, or its local date-time or date; omit for the caller's next appointment.
        """
        ctx = runtime.context
        phone = caller_number(ctx)
        if phone is None:
            return NO_CALLER_ID
        cal = calendar(runtime)

        async def run() -> str:
            return describe_outcome(cal, await cal.cancel(phone, appointment_id))

        return await speak_errors("cancel_appointment", ctx, run, sorry("cancel that appointment"))

    @tool(parse_docstring=True)
    async def list_my_appointments(runtime: ToolRuntime[CallContext]) -> str:
        """Tell the caller their upcoming appointments."""
        ctx = runtime.context
        phone = caller_number(ctx)
        if phone is None:
            return NO_CALLER_ID
        cal = calendar(runtime)

        async def run() -> str:
            appts = await cal.upcoming(phone)
            if not appts:
                return "You have no upcoming appointments."
            items = [describe_appointment(cal, a) for a in appts[:5]]
            if len(appts) == 1:
                return f"You have one appointment: {items[0]}."
            more = f", and {len(appts) - 5} more after that" if len(appts) > 5 else ""
            return f"You have {len(appts)} upcoming appointments: {spoken_list(items)}{more}."

        return await speak_errors("list_my_appointments", ctx, run, sorry("look up your appointments"))

    return [find_free_slots, book_appointment, reschedule_appointment, cancel_appointment, list_my_appointments]


__all__ = ["calendar_tools", "describe_outcome", "describe_slots"]
