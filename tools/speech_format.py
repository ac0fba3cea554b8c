"""Dates and times phrased the way a person says them on the phone (pure functions).

``spoken_datetime`` gives "Tuesday the 5th of May at 2:30 in the afternoon"; times say
"noon" and "midnight", whole hours drop the minutes ("9 in the morning"), and the hour
is always 1..12 with a part of the day, never "0:30" or "14:30".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 22 -> "22nd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def part_of_day(hour: int) -> str:
    """The phrase after a clock time: 5-11 morning, 12-16 afternoon, 17-20 evening, else night."""
    if 5 <= hour < 12:
        return "in the morning"
    if 12 <= hour < 17:
        return "in the afternoon"
    if 17 <= hour < 21:
        return "in the evening"
    return "at night"


def spoken_time(t: dt.time) -> str:
    """ "noon", "midnight", "9 in the morning", "2:30 in the afternoon", "12:15 at night"."""
    if t.minute == 0 and t.hour == 12:
        return "noon"
    if t.minute == 0 and t.hour == 0:
        return "midnight"
    hour12 = t.hour % 12 or 12
    clock = f"{hour12}" if t.minute == 0 else f"{hour12}:{t.minute:02d}"
    return f"{clock} {part_of_day(t.hour)}"


def spoken_date(day: dt.date, *, today: dt.date | None = None) -> str:
    """ "Tuesday the 5th of May"; the year is added when it differs from ``today``'s."""
    text = f"{WEEKDAY_NAMES[day.weekday()]} the {ordinal(day.day)} of {MONTH_NAMES[day.month - 1]}"
    if today is not None and day.year != today.year:
        text += f" {day.year}"
    return text


def spoken_datetime(at: dt.datetime, *, today: dt.date | None = None) -> str:
    """ "Tuesday the 5th of May at 2:30 in the afternoon" for ``at`` as given (convert it to
    the flow's zone first: the words are local time)."""
    return f"{spoken_date(at.date(), today=today)} at {spoken_time(at.time())}"


def spoken_list(items: Sequence[str], *, conjunction: str = "and") -> str:
    """ "a", "a and b", "a, b and c" (or with "or")."""
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def spoken_digits(number: str, *, last: int = 4) -> str:
    """The last digits of a phone number, spaced for speech: "4 5 6 7"."""
    digits = [c for c in number if c.isdigit()]
    return " ".join(digits[-last:])
