"""Spoken dates and times to local datetimes, the way callers say them on the phone.

ASR text says "the fifth at half past two", "next friday at ten", "tomorrow morning".
dateparser misreads most of these, so ``normalise`` first rewrites number words, ordinals
and clock phrases into digits ("the 5th at 14:30"); ``parse_when`` then resolves weekdays,
bare ordinals and relative days itself (always into the future) and hands only what is
left (month names, "27/11", "in two weeks") to dateparser with DATE_ORDER="DMY" and
PREFER_DATES_FROM="future". Pure functions: ``now`` is always passed in.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import dateparser

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_ORD_UNITS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
}  # fmt: skip
_ORD_TENS = {"twentieth": 20, "thirtieth": 30}
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_MONTH_RE = "|".join(m for m in MONTH_NAMES) + "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
PERIOD_HOURS = {"morning": 9, "afternoon": 14, "evening": 17, "tonight": 18, "lunchtime": 12}


def ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def _words_to_numbers(text: str) -> str:
    """'twenty five' -> '25', 'the twenty third' -> 'the 23rd', 'fifth' -> '5th'."""
    tokens = text.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in _TENS and nxt in _UNITS and 0 < _UNITS[nxt] < 10:
            out.append(str(_TENS[tok] + _UNITS[nxt]))
            i += 2
        elif tok in _TENS and nxt in _ORD_UNITS and _ORD_UNITS[nxt] < 10:
            out.append(ordinal_suffix(_TENS[tok] + _ORD_UNITS[nxt]))
            i += 2
        elif tok in _TENS:
            out.append(str(_TENS[tok]))
            i += 1
        elif tok in _ORD_TENS:
            out.append(ordinal_suffix(_ORD_TENS[tok]))
            i += 1
        elif tok in _ORD_UNITS and not (tok == "second" and (nxt in ("", "one", "1") or _A_CLOCK.match(nxt))):
            out.append(ordinal_suffix(_ORD_UNITS[tok]))
            i += 1
        elif tok in _UNITS and tok != "oh":
            out.append(str(_UNITS[tok]))
            i += 1
        elif tok == "oh" and out and out[-1].isdigit() and nxt in _UNITS:
            out[-1] = f"{out[-1]}:0{_UNITS[nxt]}"  # "ten oh five" -> "10:05"
            i += 2
        else:
            out.append(tok)
            i += 1
    return " ".join(out)


_CLOCK_WORDS = re.compile(
    r"(?<![:\d])\b(?:a\s+)?(quarter|half|\d{1,2})\s+(?:minutes?\s+)?(past|after|to|before)\s+(\d{1,2})\b(?![:\d])"
)


def _clock_phrases(text: str) -> str:
    """'half past 2' -> '2:30', 'quarter to 4' -> '3:45', '10 past 9' -> '9:10'."""

    def repl(m: re.Match[str]) -> str:
        amount = {"quarter": 15, "half": 30}.get(m.group(1))
        minutes = amount if amount is not None else int(m.group(1))
        hour = int(m.group(3))
        if minutes >= 60 or not 0 <= hour <= 24:
            return m.group(0)
        if m.group(2) in ("to", "before"):
            hour, minutes = (hour - 1) % 24 or 12, 60 - minutes
        return f"{hour}:{minutes:02d}"

    text = _CLOCK_WORDS.sub(repl, text)
    text = re.sub(r"(?<![:\d])(\d{1,2})\s*o'?\s?clock\b", r"\1:00", text)
    text = re.sub(r"\b(\d{1,2}:\d{2})(?:\s*o'?\s?clock\b)+", r"\1", text)
    text = re.sub(r"\b(noon|midday)\b", "12:00", text)
    text = re.sub(r"\bmidnight\b", "0:00", text)
    text = re.sub(r"\b([ap])\.?\s?m\b\.?", r"\1m", text)
    text = re.sub(r"\b(\d{1,2}(?::\d{2})?)\s+in the morning\b", r"\1 am", text)
    text = re.sub(r"\b(\d{1,2}(?::\d{2})?)\s+(?:in the (?:afternoon|evening)|at night)\b", r"\1 pm", text)
    # "2 30" / "10 05" after "at" or before am/pm -> "2:30"
    text = re.sub(r"\b(at|by|around)\s+(\d{1,2})\s+([0-5]\d)\b", r"\1 \2:\3", text)
    text = re.sub(r"\b(\d{1,2})\s+([0-5]\d)\s*(am|pm)\b", r"\1:\2 \3", text)
    return text


# "second one past two" -> "second 2:01": a second pass must keep "second" before a clock too
_A_CLOCK = re.compile(r"\d{1,2}:\d\d$")


def normalise(text: str) -> str:
    """Lower-case, number words to digits, clock phrases to H:MM. Idempotent."""
    text = text.lower().replace("-", " ").replace(",", " ").replace("?", " ").replace("!", " ")
    text = re.sub(r"\.(?!\d)", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = _words_to_numbers(text)
    return re.sub(r"\s+", " ", _clock_phrases(text)).strip()


@dataclass(frozen=True, slots=True)
class When:
    """A resolved request: a local date, and a time of day when the caller gave one.

    ``approximate`` is true when the time only came from a period ("tomorrow morning");
    ``dated`` is false when the caller named no day and ``date`` is only the next time
    that time of day comes round ("move it to 3 pm" names no day).
    """

    date: dt.date
    time: dt.time | None = None
    approximate: bool = False
    dated: bool = True

    def as_datetime(self) -> dt.datetime:
        return dt.datetime.combine(self.date, self.time or dt.time(9, 0))

    def iso(self) -> str:
        """ISO-8601 local: '2026-11-27T14:30' with a time, '2026-11-27' without."""
        if self.time is None:
            return self.date.isoformat()
        return f"{self.date.isoformat()}T{self.time.strftime('%H:%M')}"


_TIME_RE = re.compile(
    r"\b(?:(?P<h1>\d{1,2}):(?P<m1>[0-5]\d)\s*(?P<ap1>am|pm)?|(?P<h2>\d{1,2})\s*(?P<ap2>am|pm)"
    r"|(?:at|by|around|after|before|make it|(?:it|appointment|booking) to)\s+(?P<h3>\d{1,2})"
    r"(?![\d:/]|st|nd|rd|th|\s*(?:am|pm|days?|weeks?|months?|hours?|minutes?|people)\b))"
)


def parse_time(norm: str) -> tuple[dt.time | None, bool, str]:
    """Time of day in normalised text: (time, approximate, text without the time part)."""
    period = next((p for p in PERIOD_HOURS if re.search(rf"\b{p}\b", norm)), None)
    m = _TIME_RE.search(norm)
    if m is None:
        if period is None:
            return None, False, norm
        return dt.time(PERIOD_HOURS[period]), True, norm.replace(period, " ")
    hour = int(m.group("h1") or m.group("h2") or m.group("h3"))
    minute = int(m.group("m1") or 0)
    ampm = m.group("ap1") or m.group("ap2")
    if hour > 23:
        return None, False, norm
    if ampm == "pm" and hour < 12:
        hour += 12
    elif ampm == "am" and hour == 12:
        hour = 0
    elif (
        ampm is None
        and hour < 12
        and (period in ("afternoon", "evening", "tonight") or (period is None and 1 <= hour <= 7))
    ):
        hour += 12  # "at 2" on a business line means 14:00
    rest = norm[: m.start()] + " " + norm[m.end() :]
    return dt.time(hour, minute), False, rest


def _next_weekday(today: dt.date, weekday: int, *, allow_today: bool) -> dt.date:
    delta = (weekday - today.weekday()) % 7
    if delta == 0 and not allow_today:
        delta = 7
    return today + dt.timedelta(days=delta)


def _add_month(day: dt.date, n: int) -> dt.date | None:
    year, month = divmod(day.month - 1 + n, 12)
    try:
        return day.replace(year=day.year + year, month=month + 1)
    except ValueError:
        return None


_MONTH_DAY = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m1>{_MONTH_RE})|(?P<m2>{_MONTH_RE})\s+(?:the\s+)?(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?)\b(?:\s+(?P<y>20\d\d))?"
)


def _month_index(word: str) -> int:
    return next(i for i, name in enumerate(MONTH_NAMES) if name.startswith(word[:3]))


def _month_day(norm: str, today: dt.date) -> dt.date | None:
    """ "27th of november", "november 27th", "27 nov 2027" -> a date, next year if past."""
    m = _MONTH_DAY.search(norm)
    if m is None:
        return None
    day_n = int(m.group("d1") or m.group("d2"))
    month = _month_index(m.group("m1") or m.group("m2")) + 1
    year = int(m.group("y")) if m.group("y") else today.year
    try:
        day = dt.date(year, month, day_n)
    except ValueError:
        return None
    if day < today and not m.group("y"):
        try:
            day = dt.date(year + 1, month, day_n)
        except ValueError:
            return None
    return day


def parse_date(norm: str, now: dt.datetime) -> dt.date | None:
    """The date in normalised text (time part already removed), never in the past."""
    today = now.date()
    if re.search(r"\bday after tomorrow\b", norm):
        return today + dt.timedelta(days=2)
    if re.search(r"\b(today|tonight|this (morning|afternoon|evening))\b", norm):
        return today
    if re.search(r"\btomorrow\b", norm):
        return today + dt.timedelta(days=1)
    has_month = _MONTH_DAY.search(norm) is not None  # not "may i": a month needs a day
    m = re.search(r"\b(\d{1,2})(?:st|nd|rd|th)\b", norm)
    if m and not has_month:
        n = int(m.group(1))
        for months_ahead in range(3):
            base = _add_month(today.replace(day=1), months_ahead)
            if base is None:
                continue
            try:
                day = base.replace(day=n)
            except ValueError:
                continue
            if day >= today:
                return day
        return None
    weekday = re.search(r"\b(next|this|coming)?\s*(" + "|".join(WEEKDAY_NAMES) + r")\b", norm)
    if weekday and not has_month:
        return _next_weekday(today, WEEKDAY_NAMES.index(weekday.group(2)), allow_today=weekday.group(1) == "this")
    if re.search(r"\bnext week\b", norm):
        return _next_weekday(today, 0, allow_today=False)
    if has_month:
        return _month_day(norm, today)
    if not re.search(r"\b\d{1,2}/\d{1,2}(/\d{2,4})?\b|\bin \d+ (days?|weeks?|months?)\b", norm):
        return None
    found = dateparser.parse(
        re.sub(r"\b(on|the|of|at|for|please|um|uh)\b", " ", norm),
        languages=["en"],
        settings={
            "DATE_ORDER": "DMY",
            "PREFER_DATES_FROM": "future",
            "RELATIVE_BASE": now.replace(tzinfo=None),
            "RETURN_AS_TIMEZONE_AWARE": False,
            "STRICT_PARSING": False,
        },
    )
    if found is None:
        return None
    day = found.date()
    if day < today:  # "november 3rd" said in december: next year
        day = day.replace(year=day.year + 1)
    return day


def parse_when(text: str, now: dt.datetime) -> When | None:
    """Resolve a caller's spoken date/time against ``now`` (local, naive or aware).

    A time without a date means today if still ahead, else tomorrow, with ``dated`` false.
    Returns None when the text names neither a date nor a time.
    """
    norm = normalise(text)
    time, approximate, rest = parse_time(norm)
    date = parse_date(rest, now)
    if date is None and time is None:
        return None
    if date is None:
        assert time is not None
        date = now.date() if time > now.time() else now.date() + dt.timedelta(days=1)
        return When(date=date, time=time, approximate=approximate, dated=False)
    return When(date=date, time=time, approximate=approximate)
