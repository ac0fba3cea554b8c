"""Tolerant reading of the times a model passes to tools, into aware datetimes in the flow's zone.

The contract is ISO-8601 *local* time in the flow's zone ("2026-11-27T14:30" or the date
"2026-11-27"). Models drift, so this also takes a space instead of ``T``, seconds and
fractions, and a trailing ``Z`` or offset (then converted into the flow's zone).
``parse_when_lenient`` falls back to dateparser for things like "tomorrow at 3pm"; it is
slower (call it in a thread).

Moving an appointment may name only half of the new start ("move it to 3 pm", "move it
to Thursday"): ``parse_time_of_day`` reads a bare time, and ``NewStart`` fills the half
not said from the appointment being moved, never from today.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

_ISO = re.compile(
    r"""^(?P<date>\d{4}-\d{1,2}-\d{1,2})
        (?:[T\s]+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,]\d+)?)?)?
        \s*(?P<tz>Z|UTC|[+-]\d{2}(?::?\d{2})?)?$""",
    re.VERBOSE | re.IGNORECASE,
)


_TIME_OF_DAY = re.compile(
    r"""^(?:at\s+)?T?(?P<hour>\d{1,2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,]\d+)?)?)?
        \s*(?:(?P<ampm>[ap])\.?\s?m\.?)?$""",
    re.VERBOSE | re.IGNORECASE,
)
_NAMED_TIMES = {"noon": dt.time(12), "midday": dt.time(12), "midnight": dt.time(0)}


class TimeParseError(ValueError):
    """The text is not a date or time we can read."""


@dataclass(frozen=True, slots=True)
class RequestedTime:
    """A point (or a whole day, when ``has_time`` is false) in the flow's time zone."""

    at: dt.datetime  # aware, tzinfo = the flow's zone; midnight when has_time is false
    has_time: bool

    @property
    def day(self) -> dt.date:
        return self.at.date()


@dataclass(frozen=True, slots=True)
class NewStart:
    """Where to move an appointment: a day, a wall-clock time in the flow's zone, or both.

    What is left out comes from the appointment being moved: "3 pm" keeps its day,
    "Thursday" keeps its time of day. ``time`` keeps ``fold``, so an instant given with an
    offset comes back as that instant even in a repeated (DST fall-back) hour.
    """

    day: dt.date | None = None
    time: dt.time | None = None

    @classmethod
    def of(cls, wanted: RequestedTime) -> NewStart:
        return cls(day=wanted.day, time=wanted.at.time() if wanted.has_time else None)

    def on(self, current: dt.datetime, zone: ZoneInfo) -> dt.datetime:
        """The new start (aware, in ``zone``) for an appointment now at ``current``."""
        local = current.astimezone(zone)
        return localize(dt.datetime.combine(self.day or local.date(), self.time or local.time()), zone)


def localize(naive: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """Attach ``zone`` to a wall-clock time; a time in a DST gap moves forward past it."""
    aware = naive.replace(tzinfo=zone)
    # Round-trip through UTC normalises non-existent wall times (spring-forward gap).
    return aware.astimezone(dt.UTC).astimezone(zone)


def parse_when(text: str, zone: ZoneInfo) -> RequestedTime:
    """Read an ISO-8601 date or date-time; raise ``TimeParseError`` when it is not one."""
    match = _ISO.match(text.strip().strip("\"'"))
    if match is None:
        raise TimeParseError(text)
    try:
        day = dt.date(*(int(p) for p in match["date"].split("-")))
    except ValueError as exc:
        raise TimeParseError(text) from exc
    if match["hour"] is None:
        if match["tz"]:
            raise TimeParseError(text)
        return RequestedTime(at=dt.datetime.combine(day, dt.time(), tzinfo=zone), has_time=False)
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"] or 0)
    if hour == 24 and minute == 0 and second == 0:
        day, hour = day + dt.timedelta(days=1), 0
    try:
        naive = dt.datetime.combine(day, dt.time(hour, minute, second))
    except ValueError as exc:
        raise TimeParseError(text) from exc
    tz = match["tz"]
    if tz is None:
        return RequestedTime(at=localize(naive, zone), has_time=True)
    return RequestedTime(at=naive.replace(tzinfo=_offset(tz)).astimezone(zone), has_time=True)


def parse_time_of_day(text: str) -> dt.time:
    """A bare time of day: "15:00", "T15:00:00", "3pm", "3:30 p.m.", "at 3 PM", "noon".

    A bare number ("3") is refused: without minutes or am/pm it could be a day or an hour.
    """
    cleaned = text.strip().strip("\"'").strip()
    if (named := _NAMED_TIMES.get(cleaned.lower())) is not None:
        return named
    match = _TIME_OF_DAY.match(cleaned)
    if match is None or (match["minute"] is None and match["ampm"] is None):
        raise TimeParseError(text)
    hour, minute, second = int(match["hour"]), int(match["minute"] or 0), int(match["second"] or 0)
    if match["ampm"] is not None:
        if not 1 <= hour <= 12:
            raise TimeParseError(text)
        hour = hour % 12 + (12 if match["ampm"].lower() == "p" else 0)
    try:
        return dt.time(hour, minute, second)
    except ValueError as exc:
        raise TimeParseError(text) from exc


def _offset(tz: str) -> dt.tzinfo:
    if tz.upper() in ("Z", "UTC"):
        return dt.UTC
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise TimeParseError(tz)
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def parse_when_lenient(text: str, zone: ZoneInfo, *, now: dt.datetime) -> RequestedTime:
    """``parse_when``, else natural language ("tomorrow at 3pm", "Friday") relative to ``now``,
    preferring the future. Blocking and slow on first use: run it in a thread."""
    try:
        return parse_when(text, zone)
    except TimeParseError:
        pass
    from dateparser.date import DateDataParser  # imported lazily: heavy, and only a fallback

    base = now.astimezone(zone).replace(tzinfo=None)
    parser = DateDataParser(
        languages=["en"],
        settings={
            "PREFER_DATES_FROM": "future",
            "RELATIVE_BASE": base,
            "RETURN_TIME_AS_PERIOD": True,
            "PREFER_DAY_OF_MONTH": "first",
        },
    )
    data = parser.get_date_data(text)
    if data.date_obj is None:
        raise TimeParseError(text)
    found = data.date_obj
    if found.tzinfo is not None:
        return RequestedTime(at=found.astimezone(zone), has_time=True)
    if data.period == "time":
        return RequestedTime(at=localize(found.replace(second=0, microsecond=0), zone), has_time=True)
    return RequestedTime(at=dt.datetime.combine(found.date(), dt.time(), tzinfo=zone), has_time=False)
