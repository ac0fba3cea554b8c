"""Dates, times, numbers and amounts phrased the way a person says them on the phone (pure
functions).

``spoken_datetime`` gives "Tuesday the 5th of May at 2:30 in the afternoon"; times say
"noon" and "midnight", whole hours drop the minutes ("9 in the morning"), and the hour
is always 1..12 with a part of the day, never "0:30" or "14:30".

Every function takes a ``style`` (``speech_style``): ``en`` (the default, as above),
``en-IN`` (Indian English: "Thursday, 8 December at 10 in the morning") or ``hi-en``
(Hindi and Hinglish, Roman script: "Thursday, 8 December ko subah 10 baje",
"dopahar 2:30 baje", "shaam 5 baje"). Amounts in rupees use Indian grouping
("1,00,000" is "1 lakh", "2.5 crore"); Indian mobile numbers are read in two groups of five.
``turn_language`` decides which language a reply is in from the caller's recent turns.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from dialgraph.server.core.language import Spoken, detect, reply_language

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


def hindi_part_of_day(hour: int) -> str:
    """The word before a clock time in Hindi: 5-11 subah, 12-15 dopahar, 16-19 shaam, else raat."""
    if 5 <= hour < 12:
        return "subah"
    if 12 <= hour < 16:
        return "dopahar"
    if 16 <= hour < 20:
        return "shaam"
    return "raat"


def spoken_time(t: dt.time, *, style: str = "en") -> str:
    """ "noon", "midnight", "9 in the morning", "2:30 in the afternoon", "12:15 at night";
    in ``hi-en``: "subah 9 baje", "dopahar 2:30 baje", "shaam 5 baje", "raat 12 baje"."""
    hour12 = t.hour % 12 or 12
    clock = f"{hour12}" if t.minute == 0 else f"{hour12}:{t.minute:02d}"
    if style == "hi-en":
        return f"{hindi_part_of_day(t.hour)} {clock} baje"
    if t.minute == 0 and t.hour == 12:
        return "noon"
    if t.minute == 0 and t.hour == 0:
        return "midnight"
    return f"{clock} {part_of_day(t.hour)}"


def spoken_date(day: dt.date, *, today: dt.date | None = None, style: str = "en") -> str:
    """ "Tuesday the 5th of May"; Indian style (``en-IN``, ``hi-en``) "Tuesday, 5 May". The
    year is added when it differs from ``today``'s."""
    if style in ("en-IN", "hi-en"):
        text = f"{WEEKDAY_NAMES[day.weekday()]}, {day.day} {MONTH_NAMES[day.month - 1]}"
    else:
        text = f"{WEEKDAY_NAMES[day.weekday()]} the {ordinal(day.day)} of {MONTH_NAMES[day.month - 1]}"
    if today is not None and day.year != today.year:
        text += f" {day.year}"
    return text


def spoken_datetime(at: dt.datetime, *, today: dt.date | None = None, style: str = "en") -> str:
    """ "Tuesday the 5th of May at 2:30 in the afternoon" for ``at`` as given (convert it to
    the flow's zone first: the words are local time); ``en-IN`` "Tuesday, 5 May at 2:30 in
    the afternoon"; ``hi-en`` "Tuesday, 5 May ko dopahar 2:30 baje"."""
    at_word = "ko" if style == "hi-en" else "at"
    return f"{spoken_date(at.date(), today=today, style=style)} {at_word} {spoken_time(at.time(), style=style)}"


_CONJUNCTIONS_HI = {"and": "aur", "or": "ya"}


def spoken_list(items: Sequence[str], *, conjunction: str = "and", style: str = "en") -> str:
    """ "a", "a and b", "a, b and c" (or with "or"); in ``hi-en`` "aur" / "ya"."""
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    word = _CONJUNCTIONS_HI.get(conjunction, conjunction) if style == "hi-en" else conjunction
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def spoken_digits(number: str, *, last: int = 4) -> str:
    """The last digits of a phone number, spaced for speech: "4 5 6 7"."""
    digits = [c for c in number if c.isdigit()]
    return " ".join(digits[-last:])


# --- phone numbers --------------------------------------------------------------------------
def phone_groups(number: str) -> list[str]:
    """A phone number's digits in the groups people read them in: an Indian number (+91, or
    ten digits from 6-9, or 0 and ten digits) as 5-5 ("98765", "43210") with the country code
    first; a North American one (+1) as 3-3-4; others in threes with a last group of 2-4."""
    digits = "".join(c for c in number if c.isdigit())
    plus = number.strip().startswith("+")
    if (plus and digits.startswith("91") and len(digits) == 12) or (
        not plus and len(digits) == 12 and digits.startswith("91")
    ):
        return ["+91" if plus else "91", digits[2:7], digits[7:]]
    if len(digits) == 11 and digits.startswith("0") and digits[1] in "6789":
        return ["0", digits[1:6], digits[6:]]
    if len(digits) == 10 and digits[0] in "6789" and not plus:
        return [digits[:5], digits[5:]]
    if plus and digits.startswith("1") and len(digits) == 11:
        return ["+1", digits[1:4], digits[4:7], digits[7:]]
    groups: list[str] = ["+" + digits[:2]] if plus and len(digits) > 10 else []
    rest = digits[2:] if groups else digits
    while len(rest) > 4:
        groups.append(rest[:3])
        rest = rest[3:]
    if rest:
        groups.append(rest)
    return groups


def grouped_phone(number: str) -> str:
    """ "9876543210" -> "98765 43210", "+919876543210" -> "+91 98765 43210"."""
    return " ".join(phone_groups(number))


def spoken_phone(number: str) -> str:
    """A phone number for speech, digit by digit with a pause between groups:
    "9 8 7 6 5, 4 3 2 1 0" (the country code as "plus 9 1")."""
    parts = []
    for group in phone_groups(number):
        said = " ".join(c for c in group if c.isdigit())
        parts.append(f"plus {said}" if group.startswith("+") else said)
    return ", ".join(parts)


# --- Indian numbers and rupees --------------------------------------------------------------
def indian_grouping(n: int) -> str:
    """Digits grouped the Indian way: 1500 -> "1,500", 100000 -> "1,00,000",
    25000000 -> "2,50,00,000"."""
    sign, digits = ("-", str(-n)) if n < 0 else ("", str(n))
    if len(digits) <= 3:
        return sign + digits
    head, tail = digits[:-3], digits[-3:]
    pairs: list[str] = []
    while len(head) > 2:
        pairs.insert(0, head[-2:])
        head = head[:-2]
    return sign + ",".join([head, *pairs, tail])


def _trim(x: float) -> str:
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return text


def spoken_amount(value: float) -> str:
    """An amount as said in India: 1500 -> "1500", 100000 -> "1 lakh", 250000 -> "2.5 lakh",
    25000000 -> "2.5 crore"; below a lakh the plain number (TTS reads it as words)."""
    if abs(value) >= 10_000_000:
        return f"{_trim(value / 10_000_000)} crore"
    if abs(value) >= 100_000:
        return f"{_trim(value / 100_000)} lakh"
    return _trim(value)


def spoken_rupees(value: float, *, style: str = "en-IN") -> str:
    """ "1500 rupees" (English) / "1500 rupaye" (``hi-en``); "2 lakh rupees"."""
    return f"{spoken_amount(value)} {'rupaye' if style == 'hi-en' else 'rupees'}"


_RUPEES = re.compile(
    r"(?:₹|\bRs\.?|\bINR)\s?(?P<n>\d[\d,]*(?:\.\d+)?)(?:\s?(?P<unit>lakh|lakhs|lac|crore|crores|cr)\b)?",
    re.IGNORECASE,
)
_UNIT_VALUE = {
    "lakh": 100_000,
    "lakhs": 100_000,
    "lac": 100_000,
    "crore": 10_000_000,
    "crores": 10_000_000,
    "cr": 10_000_000,
}


def speak_money(text: str, *, style: str = "en-IN") -> str:
    """Rupee amounts in ``text`` as said: "₹1,500" -> "1500 rupees", "Rs. 2,50,000" ->
    "2.5 lakh rupees", "₹2.5 crore" -> "2.5 crore rupaye" (``hi-en``)."""

    def repl(m: re.Match[str]) -> str:
        value = float(m.group("n").replace(",", ""))
        if unit := m.group("unit"):
            value *= _UNIT_VALUE[unit.lower()]
        return spoken_rupees(value, style=style)

    return _RUPEES.sub(repl, text)


# --- which language a reply is in -------------------------------------------------------------
def speech_style(flow_language: str, reply: str) -> str:
    """How dates, times and lists are said: ``hi-en`` for a reply in Hindi or Hinglish,
    ``en-IN`` for an English reply on an Indian flow (en-IN, hi, hi-en), else ``en``."""
    if reply in ("hi", "hi-en"):
        return "hi-en"
    return "en-IN" if flow_language in ("en-IN", "hi", "hi-en") else "en"


# English words that show a turn is English; "yes", "ok", names and numbers show nothing.
_ENGLISH_TEXT = """i i'd i'm i'll i've me my we our you your the a an is are was be been to of for on in and or but with this
    that it it's can could would will should do does did don't want like need please have has what when where
    which how there can't i'll there's thats that's about just"""
_ENGLISH_WORDS = frozenset(_ENGLISH_TEXT.split())
_WORDS = re.compile(r"[a-z']+")


def shows_english(text: str) -> bool:
    """True when a turn is plainly English (two or more English function words, no Hindi)."""
    return sum(1 for w in _WORDS.findall(text.lower()) if w in _ENGLISH_WORDS) >= 2


def turn_language(flow_language: str, caller_turns: Sequence[str], *, lookback: int = 6) -> Spoken:
    """The language of the agent's next reply on a flow in ``flow_language``, given the
    caller's turns (oldest first): the newest turn that shows a language decides (a caller
    who switches is followed); a turn that shows none ("Rahul Sharma", "ok", "3 pm")
    keeps the language of the turns before it."""
    if flow_language == "en":
        return "en"
    for text in list(caller_turns)[::-1][:lookback]:
        spoken = detect(text)
        if spoken != "en" or shows_english(text):
            return reply_language(flow_language, spoken)
    return reply_language(flow_language, None)
