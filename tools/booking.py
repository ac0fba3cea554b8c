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
from dialgraph.tools.runtime import (
    Clock,
    answer,
    caller_number,
    clean,
    given,
    hidden_number,
    sorry,
    speak_errors,
    style_of,
)
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

# What a booking, move or cancellation did, per status and reply language (``en``, or ``hi-en``:
# Hinglish in Roman script, as a receptionist in India says it). The fields: {appt} the
# appointment, {who} the name it is under (``_UNDER_NAME``), {old} when it was, {slots} the
# appointments a time could mean. A refusal (past .. raced, else ``unavailable``) is followed
# by the nearest free times.
_OUTCOMES: dict[str, dict[str, str]] = {
    "booked": {"en": "Booked{who}: {appt}.", "hi-en": "Appointment book ho gaya{who}: {appt}."},
    "moved": {
        "en": "Done: your appointment on {old} is now on {appt}.",
        "hi-en": "Ho gaya: aapka appointment {old} se badal kar ab {appt} hai.",
    },
    "cancelled": {"en": "Cancelled your appointment on {appt}.", "hi-en": "Appointment cancel ho gaya: {appt} wala."},
    "yours": {
        "en": "You already have that appointment: {appt}.",
        "hi-en": "Yeh appointment pehle se aapka hai: {appt}.",
    },
    "not_found": {
        "en": "I couldn't find an upcoming appointment for this caller that matches.",
        "hi-en": "Is number par aisa koi aane wala appointment nahi mila.",
    },
    "ambiguous": {
        "en": "There's more than one appointment then: {slots}. Which one?",
        "hi-en": "Us time ke ek se zyada appointment hain: {slots}. Kaunsa wala?",
    },
    "past": {"en": "That time has already passed.", "hi-en": "Woh time nikal chuka hai."},
    "closed": {"en": "We're not open then.", "hi-en": "Us time hum band rehte hain."},
    "off_grid": {
        "en": "Appointments start at set times, and that exact time isn't one of them.",
        "hi-en": "Appointment fixed time par hi shuru hote hain, aur yeh time unmein nahi hai.",
    },
    "too_far": {"en": "That's too far ahead to book.", "hi-en": "Itni aage ki booking nahi ho sakti."},
    "taken": {"en": "That time is already taken.", "hi-en": "Woh time pehle se booked hai."},
    "raced": {
        "en": "Sorry, that slot was just taken by someone else.",
        "hi-en": "Maaf kijiye, woh slot abhi abhi kisi aur ne le liya.",
    },
    "unavailable": {"en": "That time is not available.", "hi-en": "Woh time available nahi hai."},
}
_UNDER_NAME = {"en": " under the name {name}", "hi-en": ", {name} ke naam se"}
_WITH_APPOINTMENT = ("booked", "moved", "cancelled", "yours")  # said only when the outcome has one
_REFUSALS = ("past", "closed", "off_grid", "too_far", "taken", "raced")
# How a result that did what was asked begins, per language (the offline model and the
# post-call analysis read them).
OUTCOME_PREFIXES: dict[str, tuple[str, ...]] = {
    "booked": ("Booked", "Appointment book ho gaya"),
    "moved": ("Done: your appointment", "Ho gaya: aapka appointment"),
    "cancelled": ("Cancelled your appointment", "Appointment cancel ho gaya"),
    "yours": ("You already have", "Yeh appointment pehle se aapka hai"),
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


def describe_slots(slots: list[dt.datetime], today: dt.date, style: str = "en") -> str:
    """ "Tuesday the 5th of May at 9 in the morning or 9:30 in the morning, or Wednesday...";
    ``hi-en``: "Tuesday, 5 May ko subah 9 baje ya subah 9:30 baje, ya Wednesday..." """
    by_day: dict[dt.date, list[str]] = {}
    for slot in slots:
        by_day.setdefault(slot.date(), []).append(spoken_time(slot.time(), style=style))
    at = "ko" if style == "hi-en" else "at"
    days = [
        f"{spoken_date(day, today=today, style=style)} {at} {spoken_list(times, conjunction='or', style=style)}"
        for day, times in by_day.items()
    ]
    return spoken_list(days, conjunction="or", style=style)


def offer(slots: tuple[dt.datetime, ...] | list[dt.datetime], today: dt.date, style: str = "en") -> str:
    if style == "hi-en":
        if not slots:
            return "Us ke aas-paas teen hafte mein koi khali time nahi dikh raha."
        return f"Sabse paas ke khali time hain: {describe_slots(list(slots), today, style)}."
    if not slots:
        return "I don't see any free times in the three weeks around then."
    return f"The nearest free times are {describe_slots(list(slots), today, style)}."


def describe_appointment(cal: Calendar, appt: AppointmentView, style: str = "en") -> str:
    text = spoken_datetime(appt.starts_at.astimezone(cal.zone), today=cal.today(), style=style)
    if not appt.purpose:
        return text
    return f"{text}, {appt.purpose} ke liye" if style == "hi-en" else f"{text}, for {appt.purpose}"


def describe_outcome(cal: Calendar, outcome: Outcome, style: str = "en") -> str:
    """What a booking, move or cancellation did, in words (``style``: see ``speech_format``)."""
    lang = "hi-en" if style == "hi-en" else "en"
    today = cal.today()
    appt, status = outcome.appointment, outcome.status
    if status in _WITH_APPOINTMENT and appt and (status != "moved" or outcome.previous):
        who = _UNDER_NAME[lang].format(name=appt.name) if appt.name else ""
        before = outcome.previous if status == "moved" else None
        old = spoken_datetime(before.starts_at.astimezone(cal.zone), today=today, style=style) if before else ""
        return _OUTCOMES[status][lang].format(appt=describe_appointment(cal, appt, style), who=who, old=old)
    if status in ("not_found", "ambiguous"):
        return _OUTCOMES[status][lang].format(slots=describe_slots(list(outcome.alternatives), today, style))
    refusal = _OUTCOMES[status if status in _REFUSALS else "unavailable"][lang]
    return f"{refusal} {offer(outcome.alternatives, today, style)}"


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
        style = style_of(runtime)

        async def run() -> str:
            try:
                near = await read_when(when, cal)
            except TimeParseError:
                return _UNREADABLE.format(text=when)
            slots = await cal.free_slots(near, max(1, min(count, 6)))
            return offer(slots, cal.today(), style)

        return await speak_errors("find_free_slots", runtime.context, run, sorry("check the calendar"))

    async def book(
        ctx: CallContext, cal: Calendar, start: str, name: str | None, purpose: str | None, style: str
    ) -> str:
        phone = caller_number(ctx)
        if phone is None:
            return hidden_number(style)

        async def run() -> str:
            try:
                wanted = await read_when(start, cal)
            except TimeParseError:
                return _UNREADABLE.format(text=start)
            if not wanted.has_time:
                slots = await cal.free_slots(wanted)
                if style == "hi-en":
                    return f"Abhi kuch book nahi hua: din ke saath time bhi chahiye. {offer(slots, cal.today(), style)}"
                return f"Nothing booked yet: I need a time as well as the day. {offer(slots, cal.today(), style)}"
            outcome = await cal.book(
                phone, wanted.at, name=clean(name, 128), purpose=clean(purpose), call_sid=ctx.call_sid
            )
            return describe_outcome(cal, outcome, style)

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
        words = await book(runtime.context, calendar(runtime), start, name, purpose, style_of(runtime))
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
        style = style_of(runtime)
        phone = caller_number(ctx)
        if phone is None:
            return hidden_number(style)
        cal = calendar(runtime)

        async def run() -> str:
            try:
                wanted = await read_new_start(new_start, cal)
            except TimeParseError:
                return _UNREADABLE.format(text=new_start)
            return describe_outcome(cal, await cal.reschedule(phone, wanted, appointment_id), style)

        return await speak_errors("reschedule_appointment", ctx, run, sorry("move that appointment"))

    @tool(parse_docstring=True)
    async def cancel_appointment(runtime: ToolRuntime[CallContext], appointment_id: str | None = None) -> str:
        """Cancel one of the caller's upcoming appointments.

        Args:
            appointment_id: which appointment: its id, or its local date-time or date; omit for the caller's next appointment.
        """
        ctx = runtime.context
        style = style_of(runtime)
        phone = caller_number(ctx)
        if phone is None:
            return hidden_number(style)
        cal = calendar(runtime)

        async def run() -> str:
            return describe_outcome(cal, await cal.cancel(phone, appointment_id), style)

        return await speak_errors("cancel_appointment", ctx, run, sorry("cancel that appointment"))

    @tool(parse_docstring=True)
    async def list_my_appointments(runtime: ToolRuntime[CallContext]) -> str:
        """Tell the caller their upcoming appointments."""
        ctx = runtime.context
        style = style_of(runtime)
        phone = caller_number(ctx)
        if phone is None:
            return hidden_number(style)
        cal = calendar(runtime)

        async def run() -> str:
            appts = await cal.upcoming(phone)
            items = [describe_appointment(cal, a, style) for a in appts[:5]]
            if style == "hi-en":
                if not appts:
                    return "Aapka koi aane wala appointment nahi hai."
                if len(appts) == 1:
                    return f"Aapka ek appointment hai: {items[0]}."
                more = f", aur uske baad {len(appts) - 5} aur" if len(appts) > 5 else ""
                return f"Aapke {len(appts)} appointment hain: {spoken_list(items, style=style)}{more}."
            if not appts:
                return "You have no upcoming appointments."
            if len(appts) == 1:
                return f"You have one appointment: {items[0]}."
            more = f", and {len(appts) - 5} more after that" if len(appts) > 5 else ""
            return f"You have {len(appts)} upcoming appointments: {spoken_list(items)}{more}."

        return await speak_errors("list_my_appointments", ctx, run, sorry("look up your appointments"))

    return [find_free_slots, book_appointment, reschedule_appointment, cancel_appointment, list_my_appointments]


__all__ = ["calendar_tools", "describe_outcome", "describe_slots"]
