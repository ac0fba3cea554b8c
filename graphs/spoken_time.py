"""Spoken dates and times to local datetimes, the way callers say them on the phone.

ASR text says "the fifth at half past two", "next friday at ten", "tomorrow morning",
"10.30", "1030", "kal subah saade das baje". dateparser misreads most of these, so
``normalise`` first rewrites number words, ordinals and clock phrases into digits ("the 5th
at 14:30"), every written form of a clock time ("10.30", "1030", "10 30", "10h30",
"10.30am") into H:MM, and the romanised Hindi date and time words of Hinglish into their
English forms ("kal" -> "tomorrow", "guruvar" -> "thursday", "shaam 5 baje" ->
"evening 5:00", "saade das" -> "10:30"); ``parse_when`` then resolves weekdays, bare
ordinals and relative days itself (always into the future) and hands only what is left
(month names, "27/11", "in two weeks") to dateparser with DATE_ORDER="DMY" and
PREFER_DATES_FROM="future". Pure functions: ``now`` is always passed in.

A form that names minutes is never read as the full hour: a time that cannot be read
completely ("at 10.3", "at half past", "saade baje") makes ``parse_when`` return None, so
the agent asks again instead of booking the wrong slot.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

import dateparser

from dialgraph.graphs.hinglish_time import (
    BAJE,
    DEVANAGARI_RE,
    HI_TRIGGER,
    HINGLISH_MARKERS,
    PAUNE,
    SAADE,
    SAWA,
    hindi_numbers,
    hinglish_to_english,
    is_hindi_cue,
    romanise,
)
from dialgraph.graphs.time_words import (
    MONTH_NAMES,
    MONTH_RE,
    NOT_MONEY,
    QTY,
    QTY_H,
    WEEKDAY_NAMES,
    words_to_numbers,
)

PERIOD_HOURS = {"morning": 9, "afternoon": 14, "evening": 17, "tonight": 18, "lunchtime": 12, "night": 20}


_CUE_BEFORE = r"(?:at|by|around|about|from|till|until|before|after|say|between)"

# "10.30" / "10.30am" (a dot, as Whisper writes it); not "8.12.2026" nor "rs 10.50"
_DOTTED = re.compile(rf"{NOT_MONEY}\b(\d{{1,2}})\.([0-5]\d)(?![\d.])(?!\s*{QTY}\b)")
_H_FORM = re.compile(r"(?<![\d.:])\b(\d{1,2})h([0-5]\d)\b")  # "10h30"
# "1030": after a cue word or before am/pm/hours/baje any clock time, else only
# 1:05..12:55 in five-minute steps ("2026" is a year, "100" a quantity)
_FOUR = re.compile(
    rf"(?P<cue>\b{_CUE_BEFORE}\s+)?{NOT_MONEY}(?<!\d\s)\b(?P<h>\d{{1,2}})(?P<m>[0-5]\d)\b(?![:.]\d)(?!\s\d)"
    r"(?P<after>\s*(?:am|pm|hours|hrs|hr|baje|bje|baja)\b)?"
)
_NO_BARE_FOUR = re.compile(
    r"\b(?:number|no|room|flat|pin|code|otp|house|plot|sector|block|id|order|ref|reference|policy|extension|ext)"
    r"(?:\s+(?:is|was|hai|number))?\s*$"
)
# "10 30" (a space, or "10-30" and "ten thirty" once normalised), not inside a run or a list
# of numbers ("16 24 or 32"); without a time word around it only 1:05..12:55 in 5-minute steps
_SPACED = re.compile(
    rf"(?<![\d:.$£€₹#])(?<!\d )\b(\d{{1,2}}) ([0-5]\d)\b(?![:.]\d)(?! \d)(?!\s*(?:st|nd|rd|th)\b)(?!\s*{QTY}\b)"
    r"(?!\s+(?:or|and|to|se)\s+\d)(?P<after>\s+(?:am|pm|baje|bje|baja|bajkar|bajke|ko|o'?\s?clock|hours|hrs)\b)?"
)
_TIME_CUES = frozenset(WEEKDAY_NAMES) | {
    "at", "by", "around", "about", "from", "till", "until", "before", "after", "say", "between", "today",
    "tomorrow", "tonight", "morning", "afternoon", "evening", "night", "ko", "ke", "kal", "aaj",
}  # fmt: skip
_AND_A_HALF = re.compile(rf"\b({_CUE_BEFORE}\s+)(\d{{1,2}}) and a half\b(?!\s*{QTY_H}\b)")
_HALF_H = re.compile(
    r"(?<![:\d])\bhalf (\d{1,2})\b(?![\d:.])(?!\s+(?:past|to|after|before)\s+\d)(?!\s*" + QTY_H + r"\b)"
)


def _numeric_clock(text: str) -> str:
    """Every written form of a clock time with minutes to H:MM: "10.30", "10h30", "1030",
    "10 30", "10.30am", "at 10 and a half", "half 10" (British: 10:30)."""
    text = re.sub(r"(\d)([ap]) ?m\b", r"\1 \2m", text)  # "10.30am" / "1030pm" -> "10.30 am"
    text = re.sub(r"\b([ap])\.?\s?m\b\.?", r"\1m", text)  # "a m" (from "a.m.") -> "am"

    def hm(h: str, m: str, whole: str) -> str:
        return f"{int(h)}:{m}" if int(h) <= 23 else whole

    text = _DOTTED.sub(lambda m: hm(m.group(1), m.group(2), m.group(0)), text)
    text = _H_FORM.sub(lambda m: hm(m.group(1), m.group(2), m.group(0)), text)

    def four(m: re.Match[str]) -> str:
        hour, minute = int(m.group("h")), int(m.group("m"))
        after = m.group("after") or ""
        clock = f"{m.group('cue') or ''}{hour}:{m.group('m')}"
        if re.match(r"\s*(am|pm)", after):
            return clock + after if 1 <= hour <= 12 else m.group(0)
        if re.match(r"\s*(hours|hrs|hr)\b", after):
            return clock if hour <= 23 else m.group(0)
        if after:
            return clock + after if hour <= 23 else m.group(0)
        if _QTY_FOLLOWS.match(text, m.end()):
            return m.group(0)  # "at 240 ms", "1030 rupees"
        if m.group("cue"):
            return clock if hour <= 12 else m.group(0)
        if 1 <= hour <= 12 and minute % 5 == 0 and minute and not _NO_BARE_FOUR.search(text[: m.start()]):
            return clock
        return m.group(0)

    text = _FOUR.sub(four, text)

    def spaced(m: re.Match[str]) -> str:
        before = text[: m.start()].split()
        hour, minute = int(m.group(1)), int(m.group(2))
        if hour > 23 or (before and before[-1][:3] in _MONTH_PREFIXES):
            return m.group(0)
        cued = m.group("after") or (before and _is_cue(before[-1]))
        if not cued and not (1 <= hour <= 12 and minute % 5 == 0):
            return m.group(0)
        return f"{hour}:{m.group(2)}{m.group('after') or ''}"

    text = _SPACED.sub(spaced, text)
    text = _AND_A_HALF.sub(lambda m: f"{m.group(1)}{int(m.group(2))}:30" if int(m.group(2)) <= 23 else m.group(0), text)
    return _HALF_H.sub(lambda m: f"{int(m.group(1))}:30" if int(m.group(1)) <= 23 else m.group(0), text)


_MONTH_PREFIXES = frozenset(m[:3] for m in MONTH_NAMES)
_QTY_FOLLOWS = re.compile(rf"\s*{QTY_H}\b")


def _is_cue(word: str) -> bool:
    """A word that makes the numbers after it a time: "at", "tomorrow", "subah", "somvar", "5th"."""
    return word in _TIME_CUES or re.fullmatch(r"\d{1,2}(st|nd|rd|th)", word) is not None or is_hindi_cue(word)


_CLOCK_WORDS = re.compile(
    r"(?<![:.\d])\b(?:a\s+)?(quarter|half|\d{1,2})\s+(?:minutes?\s+)?(past|after|to|before)\s+(\d{1,2})\b(?![:.\d])"
)


def _clock_word(m: re.Match[str]) -> str:
    amount = {"quarter": 15, "half": 30}.get(m.group(1))
    minutes = amount if amount is not None else int(m.group(1))
    hour = int(m.group(3))
    if minutes >= 60 or not 0 <= hour <= 24:
        return m.group(0)
    if m.group(2) in ("to", "before"):
        hour, minutes = (hour - 1) % 24 or 12, 60 - minutes
    return f"{hour}:{minutes:02d}"


_CLOCK_DONE = re.compile(rf"\b(\d{{1,2}}:\d{{2}})(?:\s*(?:o'?\s?clock|{BAJE})\b)+")  # "2:30 o'clock" / "2:30 baje"
_CLOCK_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (_CLOCK_WORDS, _clock_word),
    (re.compile(r"(?<![:\d])(\d{1,2})\s*o'?\s?clock\b"), r"\1:00"),
    (_CLOCK_DONE, r"\1"),
    (re.compile(r"\b(noon|midday)\b"), "12:00"),
    (re.compile(r"\bmidnight\b"), "0:00"),
    (re.compile(r"\b([ap])\.?\s?m\b\.?"), r"\1m"),
    (re.compile(r"\b(\d{1,2}(?::\d{2})?)\s+in the morning\b"), r"\1 am"),
    (re.compile(r"\b(\d{1,2}(?::\d{2})?)\s+in the (?:afternoon|evening)\b"), r"\1 pm"),
    # "10 at night" is 22:00; "12 at night" or "2 at night" is after midnight: left to the night rule
    (re.compile(r"\b((?:[5-9]|1[01])(?::\d{2})?)\s+at night\b"), r"\1 pm"),
    # "2 30" / "10 05" after "at" or before am/pm -> "2:30"
    (re.compile(r"\b(at|by|around)\s+(\d{1,2})\s+([0-5]\d)\b"), r"\1 \2:\3"),
    (re.compile(r"(?<![:.\d])\b(\d{1,2})\s+([0-5]\d)\s*(am|pm)\b"), r"\1:\2 \3"),
)


def _clock_phrases(text: str) -> str:
    """'half past 2' -> '2:30', 'quarter to 4' -> '3:45', '10 past 9' -> '9:10'."""
    for pattern, repl in _CLOCK_RULES:
        text = pattern.sub(repl, text)
    return text


_DAY_WORD = rf"(?:today|tomorrow|tonight|{'|'.join(WEEKDAY_NAMES)}|\d{{1,2}}(?:st|nd|rd|th)|(?:{MONTH_RE}) \d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)? (?:of )?(?:{MONTH_RE}))"
# "tomorrow 10", "thursday ko 11", "morning 10": an hour named right after a day or a period
_BARE_HOUR = re.compile(
    rf"\b((?:{_DAY_WORD}|(?<!good )(?:morning|afternoon|evening|night))\s+(?:ko\s+|ke\s+|at\s+)?)(\d{{1,2}})\b"
    rf"(?![\d:./])(?!\s*(?:st|nd|rd|th|am|pm|o'?\s?clock|{BAJE}|{QTY_H}|{MONTH_RE})\b)(?!\s+(?:(?:and|or|to|past|after|before|minutes?)\b|\d))"
)


def normalise(text: str) -> str:
    """Lower-case, number words to digits, clock times to H:MM, Hinglish date and time
    words to English. Idempotent."""
    if DEVANAGARI_RE.search(text):
        text = romanise(text)
    hinglish = any(w in HINGLISH_MARKERS for w in re.findall(r"[a-z']+", text.lower()))
    text = text.lower().replace("-", " ").replace(",", " ").replace("?", " ").replace("!", " ")
    text = re.sub(r"\.(?!\d)", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = words_to_numbers(text)
    hindi = hinglish or HI_TRIGGER.search(text) is not None
    if hindi:
        text = hindi_numbers(text)
    text = _clock_phrases(_numeric_clock(text))  # "quarter to 2 baje": the clock phrase first
    if hindi:
        text = _clock_phrases(hinglish_to_english(text, hinglish))
    text = re.sub(r"\s+", " ", text).strip()
    text = _BARE_HOUR.sub(lambda m: f"{m.group(1)}{int(m.group(2))}:00" if int(m.group(2)) <= 23 else m.group(0), text)
    return text


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
_PERIOD_RE = re.compile(r"(?<!good )\b(morning|afternoon|evening|tonight|lunchtime|night)\b")
# Forms that name minutes (or a time) which could not be read: the whole request is
# unreadable rather than read as the full hour ("at 10.3", "at half past", "saade baje").
_UNREADABLE = re.compile(
    rf"{NOT_MONEY}\b\d{{1,2}}[.:]\d(?![\d.:])(?!\s*{QTY_H}\b)"
    rf"|{NOT_MONEY}\b\d{{1,2}}\.\d{{3,}}(?!\s*{QTY_H}\b)"
    r"|\b(?:quarter|half)\s+(?:past|to|after|before)\b(?!\s+\d)"
    r"|(?<![:\d])\b\d{1,2}\s+(?:minutes?\s+)?past\b(?!\s+\d)"
    rf"|\b{BAJE}\b"
    rf"|\b(?:{SAADE}|{SAWA}|{PAUNE})\b(?!\s+(?:\d+\s+)?{QTY_H}\b)"
    rf"|\b\d{{1,2}}\s+and\s+a\s+(?:half|quarter)\b(?!\s+{QTY_H}\b)"
    r"|\b\d{1,2}\s+(?:and\s+)?\d{1,2}\s+(?:minutes?|mins?)\b"
    r"|\b(?:at|by|around)\s+\d{1,2}\s*(?:[.,h]\d|\s+and\s+\d|\s+[0-5]\d\b)"
)


def unreadable_time(norm: str) -> bool:
    """True when normalised text names a time that cannot be read completely (the caller
    should be asked again rather than given the full hour)."""
    return _UNREADABLE.search(norm) is not None


def _period_hour(hour: int, period: str | None) -> int | None:
    """A 1-12 hour said without am/pm, read with its period; None: ambiguous."""
    if period in ("afternoon", "lunchtime"):
        return hour + 12 if 1 <= hour <= 7 else (12 if hour == 12 else None)
    if period == "evening":  # "shaam 4 baje": 16:00
        return hour + 12 if 1 <= hour <= 11 else None
    if period in ("night", "tonight"):
        return hour + 12 if 5 <= hour <= 11 else None  # "raat 12 baje", "2 at night": after midnight
    if period == "morning":
        return hour if 1 <= hour <= 11 else None
    return hour + 12 if 1 <= hour <= 7 else hour  # "at 2" on a business line means 14:00


def parse_time(norm: str) -> tuple[dt.time | None, bool, str]:
    """Time of day in normalised text: (time, approximate, text without the time part).
    (None, False, text) when there is none, or when the time named cannot be read."""
    if unreadable_time(norm):
        return None, False, norm
    pm = _PERIOD_RE.search(norm)
    period = pm.group(1) if pm else None
    m = _TIME_RE.search(norm)
    if m is None:
        if period is None:
            return None, False, norm
        rest = re.sub(rf"\bthis {period}\b", "today", norm)
        return dt.time(PERIOD_HOURS[period]), True, _PERIOD_RE.sub(" ", rest)
    hour = int(m.group("h1") or m.group("h2") or m.group("h3"))
    minute = int(m.group("m1") or 0)
    ampm = m.group("ap1") or m.group("ap2")
    if hour > 23 or (ampm and not 1 <= hour <= 12 and not (ampm == "pm" and hour <= 23)):
        return None, False, norm
    if ampm == "pm" and hour < 12:
        hour += 12
    elif ampm == "am" and hour == 12:
        hour = 0
    elif ampm is None and 1 <= hour <= 12:
        read = _period_hour(hour, period)
        if read is None:
            return None, False, norm
        hour = read
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
    rf"\b(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m1>{MONTH_RE})|(?P<m2>{MONTH_RE})\s+(?:the\s+)?(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?)\b(?:\s+(?P<y>20\d\d))?"
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
        first = 1 if re.search(r"\bnext month\b", norm) else 0  # "agle mahine 5 tarikh"
        for months_ahead in range(first, first + 3):
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
    if time is None and (unreadable_time(norm) or _TIME_RE.search(norm)):
        return None  # a time was named but cannot be read: ask again, never guess the hour
    date = parse_date(rest, now)
    if date is None and time is None:
        return None
    if date is None:
        assert time is not None
        date = now.date() if time > now.time() else now.date() + dt.timedelta(days=1)
        return When(date=date, time=time, approximate=approximate, dated=False)
    return When(date=date, time=time, approximate=approximate)
