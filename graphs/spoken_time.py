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

from dialgraph.server.core.language import HINDI_WORDS

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
PERIOD_HOURS = {"morning": 9, "afternoon": 14, "evening": 17, "tonight": 18, "lunchtime": 12, "night": 20}


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


# Words after a number that make it a quantity, not a clock time ("10.50 rupees", "2.5 lakh").
_QTY = (
    r"(?:%|percent|per cent|dollars?|bucks|rupees?|rupaye|rupay|rupiya|rs|inr|pounds?|euros?|lakhs?|lacs?|crores?"
    r"|karod|k|thousand|hundred|hazaar|hazar|sau|kgs?|kilos?|grams?|kms?|miles?|metres?|meters?|litres?|liters?"
    r"|stars?|points?|years?|yrs|saal|months?|mahine|mahina|weeks?|hafte|hafta|days?|din|ghante|ghanta|minutes?"
    r"|mins?|seconds?|secs?|people|persons?|log|logon|times|baar|guna|x|gb|mb|inch(?:es)?|feet|foot|ft|cm|mm"
    r"|patients?|members?|rooms?|floors?|ms|milliseconds?|bytes?|kb)"
)
_QTY_H = rf"(?:{_QTY}|hours?|hrs?)"
_NOT_MONEY = r"(?<![\d.:$£€₹#])(?<!rs )(?<!inr )"
_CUE_BEFORE = r"(?:at|by|around|about|from|till|until|before|after|say|between)"

# "10.30" / "10.30am" (a dot, as Whisper writes it); not "8.12.2026" nor "rs 10.50"
_DOTTED = re.compile(rf"{_NOT_MONEY}\b(\d{{1,2}})\.([0-5]\d)(?![\d.])(?!\s*{_QTY}\b)")
_H_FORM = re.compile(r"(?<![\d.:])\b(\d{1,2})h([0-5]\d)\b")  # "10h30"
# "1030": after a cue word or before am/pm/hours/baje any clock time, else only
# 1:05..12:55 in five-minute steps ("2026" is a year, "100" a quantity)
_FOUR = re.compile(
    rf"(?P<cue>\b{_CUE_BEFORE}\s+)?{_NOT_MONEY}(?<!\d\s)\b(?P<h>\d{{1,2}})(?P<m>[0-5]\d)\b(?![:.]\d)(?!\s\d)"
    r"(?P<after>\s*(?:am|pm|hours|hrs|hr|baje|bje|baja)\b)?"
)
_NO_BARE_FOUR = re.compile(
    r"\b(?:number|no|room|flat|pin|code|otp|house|plot|sector|block|id|order|ref|reference|policy|extension|ext)"
    r"(?:\s+(?:is|was|hai|number))?\s*$"
)
# "10 30" (a space, or "10-30" and "ten thirty" once normalised), not inside a run or a list
# of numbers ("16 24 or 32"); without a time word around it only 1:05..12:55 in 5-minute steps
_SPACED = re.compile(
    rf"(?<![\d:.$£€₹#])(?<!\d )\b(\d{{1,2}}) ([0-5]\d)\b(?![:.]\d)(?! \d)(?!\s*(?:st|nd|rd|th)\b)(?!\s*{_QTY}\b)"
    r"(?!\s+(?:or|and|to|se)\s+\d)(?P<after>\s+(?:am|pm|baje|bje|baja|bajkar|bajke|ko|o'?\s?clock|hours|hrs)\b)?"
)
_TIME_CUES = frozenset(WEEKDAY_NAMES) | {
    "at", "by", "around", "about", "from", "till", "until", "before", "after", "say", "between", "today",
    "tomorrow", "tonight", "morning", "afternoon", "evening", "night", "ko", "ke", "kal", "aaj",
}  # fmt: skip
_AND_A_HALF = re.compile(rf"\b({_CUE_BEFORE}\s+)(\d{{1,2}}) and a half\b(?!\s*{_QTY_H}\b)")
_HALF_H = re.compile(
    r"(?<![:\d])\bhalf (\d{1,2})\b(?![\d:.])(?!\s+(?:past|to|after|before)\s+\d)(?!\s*" + _QTY_H + r"\b)"
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
_QTY_FOLLOWS = re.compile(rf"\s*{_QTY_H}\b")


def _is_cue(word: str) -> bool:
    """A word that makes the numbers after it a time: "at", "tomorrow", "subah", "somvar", "5th"."""
    return (
        word in _TIME_CUES
        or re.fullmatch(r"\d{1,2}(st|nd|rd|th)", word) is not None
        or any(pattern.fullmatch(word) for pattern, _ in _HI_WEEKDAYS)
        or _HI_CUE.fullmatch(word) is not None
    )


# --- Hinglish: romanised Hindi dates and times, as ASR writes them ------------------------
_HI_HOURS = {
    "ek": 1, "do": 2, "teen": 3, "tin": 3, "char": 4, "chaar": 4, "paanch": 5, "panch": 5, "paach": 5,
    "chhe": 6, "chhah": 6, "chah": 6, "chheh": 6, "cheh": 6, "chhai": 6, "saat": 7, "aath": 8, "aat": 8, "nau": 9,
    "das": 10, "dus": 10, "gyarah": 11, "gyara": 11, "gyaarah": 11, "gyaara": 11, "igyarah": 11, "barah": 12,
    "bara": 12, "baarah": 12, "baara": 12,
}  # fmt: skip
_HI_MINUTES = {
    "paanch": 5, "panch": 5, "das": 10, "dus": 10, "pandrah": 15, "pandra": 15, "bees": 20, "bis": 20, "pachees": 25,
    "pachis": 25, "pachchis": 25, "tees": 30, "tis": 30, "paintis": 35, "paintees": 35, "chalis": 40, "chaalis": 40,
    "chalees": 40, "paintalis": 45, "paintalees": 45, "pachas": 50, "pachaas": 50, "pachpan": 55,
}  # fmt: skip
_HI_NUM = "|".join(sorted(_HI_HOURS, key=len, reverse=True))
_HI_NUM_NOT_DO = "|".join(w for w in sorted(_HI_HOURS, key=len, reverse=True) if w != "do")  # "do" is English too
_HI_MIN = "|".join(sorted(_HI_MINUTES, key=len, reverse=True))
_BAJE = r"(?:baje|bajey|baaje|baja|bje|bajkar|bajke|baj\s+kar|baj\s+ke|baj)"
_SAADE = r"(?:saade|saadhe|sade|sadhe|saadey)"
_SAWA = r"(?:sawa|sava|savaa|sawaa)"
_PAUNE = r"(?:paune|pone|paunay|pauney)"
_HI_PERIODS = (
    (r"subah|subha|subeh|suba|sawere|savere|sawera|savera|sabere|prataha", "morning"),
    (r"dopahar|dopehar|dophar|dopahr|dupahar|dupehar|dopaher", "afternoon"),
    (r"shaam|shyaam|saam", "evening"),
    (r"raat|raatko|rat ko", "night"),
)
_HI_PERIOD_WORDS = "|".join(p for p, _ in _HI_PERIODS) + "|sham"
_HI_CUE = re.compile(rf"{_HI_PERIOD_WORDS}|parson|parso|parsoon|parsun|parsho|tarikh|taarikh|tareekh|tarik")
_HI_WEEKDAYS = tuple(
    (re.compile(rf"\b(?:{long})\b|\b(?:{short})\b(?=\s+(?:ko|ke din)\b)"), english)
    for long, short, english in (
        (r"som(?:v|w)aa?r|somaar", "som", "monday"),
        (r"mangal(?:v|w)aa?r", "mangal", "tuesday"),
        (r"budh(?:v|w)aa?r", "budh", "wednesday"),
        (r"guru(?:v|w)aa?r|brihaspati(?:v|w)aa?r|veer(?:v|w)aa?r|vir(?:v|w)aa?r", "guru|brihaspat", "thursday"),
        (r"shukra?(?:v|w)aa?r", "shukra", "friday"),
        (r"shani(?:v|w)aa?r|sani(?:v|w)aa?r", "shani", "saturday"),
        (r"ravi(?:v|w)aa?r|it(?:v|w)aa?r|et(?:v|w)aa?r", "ravi", "sunday"),
    )
)


_MONTH_WORDS = "|".join(MONTH_NAMES) + "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
_HI_NUM_CUED = (
    re.compile(rf"\b()({_HI_NUM})(?=\s+(?:{_BAJE}|tarikh|taarikh|tareekh|{_MONTH_WORDS})\b)"),
    re.compile(rf"\b((?:{_SAADE}|{_SAWA}|{_PAUNE})\s+)({_HI_NUM})\b"),
    # after a period word, but "subah do" is not a time ("do" is English too)
    re.compile(rf"\b((?:{_HI_PERIOD_WORDS})\s+(?:ko\s+|ke\s+)?)({_HI_NUM_NOT_DO})\b(?!\s+{_QTY_H}\b)"),
)
_HI_MIN_CUED = re.compile(rf"\b(\d{{1,2}}\s+{_BAJE}\s+)({_HI_MIN})(?=\s+(?:minute|minutes|min|mins|mint|minat)\b)")
# Any Hindi date or time word at all: an English turn skips the Hinglish rules (speed)
_HI_TRIGGER = re.compile(
    rf"\b(?:{_HI_NUM}|{_BAJE}|{_SAADE}|{_SAWA}|{_PAUNE}|dhai|dhaai|dhaee|dhayi|dhaiy|dedh|derh|dedth|dhedh"
    rf"|{_HI_PERIOD_WORDS}|aaj|kal|pars\w*|agl\w*|aagle|agale|aane|haft\w*|saptah|mahin\w*|tarikh|taarikh|tareekh|tarik"
    r"|som\w*|mangal\w*|budh\w*|guru\w*|brihaspat\w*|veer\w*|vir\w*|shukr\w*|shani\w*|sani\w*|ravi\w*|it[vw]\w*"
    r"|et[vw]\w*)\b"
)


def _hindi_numbers(text: str) -> str:
    """Hindi number words to digits where a time word makes them a time: "das baje",
    "saade das", "subah das", "bajkar tees minute", "aath december", "teen tarikh"."""
    for pattern in _HI_NUM_CUED:
        text = pattern.sub(lambda m: f"{m.group(1)}{_HI_HOURS[m.group(2)]}", text)
    return _HI_MIN_CUED.sub(lambda m: f"{m.group(1)}{_HI_MINUTES[m.group(2)]}", text)


def _fraction(minute: int, back: int) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        hour = int(m.group(1))
        return _hm((hour - back) or 12, minute, m.group(0)) if 1 <= hour <= 12 else m.group(0)

    return repl


_NOT_QTY = rf"(?!\s+{_QTY_H}\b)"
_HI_CLOCK: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # "saade das (baje)" 10:30, "sawa 11" 11:15, "paune 10" 9:45; not "saade teen lakh"
    *(
        (re.compile(rf"\b{words}\s+(\d{{1,2}})\b(?![\d:.]){_NOT_QTY}(?:\s+{_BAJE}\b)*"), _fraction(minute, back))
        for words, minute, back in ((_SAADE, 30, 0), (_SAWA, 15, 0), (_PAUNE, 45, 1))
    ),
    (re.compile(rf"\b(?:dhai|dhaai|dhaee|dhayi|dhaiy)\b{_NOT_QTY}(?:\s+{_BAJE}\b)*"), "2:30"),
    (re.compile(rf"\b(?:dedh|derh|dedth|dhedh)\b{_NOT_QTY}(?:\s+{_BAJE}\b)*"), "1:30"),
    # "11 bajkar 30 minute", "11 baje 30 min", "11 bajke 30"
    (
        re.compile(rf"(?<![\d:.])\b(\d{{1,2}})\s+{_BAJE}\s+([0-5]?\d)\s*(?:minute|minutes|min|mins|mint|minat)\b"),
        lambda m: _hm(int(m.group(1)), int(m.group(2)), m.group(0)),
    ),
    (
        re.compile(r"(?<![\d:.])\b(\d{1,2})\s+(?:bajkar|bajke|baj\s+kar|baj\s+ke)\s+([0-5]\d)\b(?![\d:.])"),
        lambda m: _hm(int(m.group(1)), int(m.group(2)), m.group(0)),
    ),
    (re.compile(rf"\b(\d{{1,2}}:\d\d)(?:\s+{_BAJE}\b)+"), r"\1"),
    (re.compile(rf"(?<![\d:.])\b(\d{{1,2}})(?:\s+{_BAJE}\b)+"), lambda m: _hm(int(m.group(1)), 0, m.group(0))),
    (
        re.compile(r"(?<![\d:.])\b(\d{1,2})\s+(?:tarikh|taarikh|tareekh|tarik)\b"),
        lambda m: ordinal_suffix(int(m.group(1))),
    ),
)
_HI_WORDS_EN = {
    **{w: en for words, en in _HI_PERIODS for w in words.split("|")},
    "aaj": "today",
    "kal": "tomorrow",  # booking: "kal" is the future
    **dict.fromkeys(("parson", "parso", "parsoon", "parsun", "parsho"), "day after tomorrow"),
    **dict.fromkeys(("agle", "agla", "agli", "aagle", "agale", "aane wale", "aane wala", "aane wali"), "next"),
    **dict.fromkeys(("hafte", "hafta", "haftay", "saptah"), "week"),
    **dict.fromkeys(("mahine", "mahina"), "month"),
}
_HI_WORD_RE = re.compile(rf"\b(?:{'|'.join(sorted(_HI_WORDS_EN, key=len, reverse=True))})\b")
_THIS_WEEKDAY = re.compile(rf"\bis\s+(?=(?:{'|'.join(WEEKDAY_NAMES)}|week)\b)")


def _hindi(text: str, hinglish: bool) -> str:
    """Hinglish date and time words (their numbers already digits) to the English forms
    ``parse_when`` reads."""
    for pattern, repl in _HI_CLOCK:
        text = pattern.sub(repl, text)
    text = _HI_WORD_RE.sub(lambda m: _HI_WORDS_EN[m.group(0)], text)
    for weekday, english in _HI_WEEKDAYS:
        text = weekday.sub(english, text)
    if hinglish:  # "sham" (also English) is evening and "is friday" this Friday only in a Hinglish turn
        text = _THIS_WEEKDAY.sub("this ", re.sub(r"\bsham\b", "evening", text))
    return text


def _hm(hour: int, minute: int, whole: str) -> str:
    """ "H:MM", or ``whole`` (the words as said) when that is no time of day."""
    return f"{hour}:{minute:02d}" if 0 <= hour <= 23 and 0 <= minute <= 59 else whole


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


_CLOCK_DONE = re.compile(rf"\b(\d{{1,2}}:\d{{2}})(?:\s*(?:o'?\s?clock|{_BAJE})\b)+")  # "2:30 o'clock" / "2:30 baje"
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


# "second one past two" -> "second 2:01": a second pass must keep "second" before a clock too
# (and "second 1st", from "second one tarikh")
_A_CLOCK = re.compile(r"\d{1,2}:\d\d$|\d{1,2}(?:st|nd|rd|th)$")

_DAY_WORD = rf"(?:today|tomorrow|tonight|{'|'.join(WEEKDAY_NAMES)}|\d{{1,2}}(?:st|nd|rd|th)|(?:{_MONTH_RE}) \d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)? (?:of )?(?:{_MONTH_RE}))"
# "tomorrow 10", "thursday ko 11", "morning 10": an hour named right after a day or a period
_BARE_HOUR = re.compile(
    rf"\b((?:{_DAY_WORD}|(?<!good )(?:morning|afternoon|evening|night))\s+(?:ko\s+|ke\s+|at\s+)?)(\d{{1,2}})\b"
    rf"(?![\d:./])(?!\s*(?:st|nd|rd|th|am|pm|o'?\s?clock|{_BAJE}|{_QTY_H}|{_MONTH_RE})\b)(?!\s+(?:(?:and|or|to|past|after|before|minutes?)\b|\d))"
)


# Hindi in Devanagari (Deepgram's ``hi`` output) to the romanised words the rules read: the
# date, time, yes/no and request vocabulary only (names and other words stay as they are).
_DEVANAGARI_PAIRS = """
    कल=kal आज=aaj परसों=parson परसो=parso सुबह=subah सवेरे=sawere दोपहर=dopahar शाम=shaam रात=raat
    बजे=baje बजकर=bajkar बज=baj साढ़े=saade साढे=saade सवा=sawa पौने=paune ढाई=dhai डेढ़=dedh डेढ=dedh मिनट=minute
    सोमवार=somvar मंगलवार=mangalvar बुधवार=budhvar गुरुवार=guruvar बृहस्पतिवार=brihaspativar शुक्रवार=shukravar
    शनिवार=shanivar रविवार=ravivar इतवार=itvaar मंडे=monday ट्यूज़डे=tuesday ट्यूसडे=tuesday वेडनेसडे=wednesday
    थर्सडे=thursday फ्राइडे=friday सैटरडे=saturday संडे=sunday अगले=agle अगला=agla अगली=agli हफ्ते=hafte हफ़्ते=hafte
    महीने=mahine तारीख=tarikh तारीख़=tarikh जनवरी=january फरवरी=february फ़रवरी=february मार्च=march अप्रैल=april
    मई=may जून=june जुलाई=july अगस्त=august सितंबर=september सितम्बर=september अक्टूबर=october अक्तूबर=october
    नवंबर=november नवम्बर=november दिसंबर=december दिसम्बर=december
    एक=ek दो=do तीन=teen चार=char पांच=paanch पाँच=paanch छह=chhah छः=chhah सात=saat आठ=aath नौ=nau दस=das
    ग्यारह=gyarah बारह=barah पंद्रह=pandrah बीस=bees तीस=tees पैंतालीस=paintalis
    को=ko के=ke का=ka की=ki से=se है=hai हैं=hain हाँ=haan हां=haan जी=ji नहीं=nahi नही=nahi ठीक=theek
    बिल्कुल=bilkul बिलकुल=bilkul ज़रूर=zaroor जरूर=zaroor चलेगा=chalega सही=sahi मत=mat करो=karo कर=kar
    दीजिए=dijiye दीजिये=dijiye करना=karna करनी=karni चाहिए=chahiye चाहिये=chahiye मुझे=mujhe मेरा=mera मेरी=meri
    नाम=naam अपॉइंटमेंट=appointment अपॉइंटमेन्ट=appointment अपोइंटमेंट=appointment बुक=book कैंसल=cancel
    कैन्सल=cancel रद्द=radd बदलना=badalna बदल=badal बात=baat किसी=kisi इंसान=insaan मैसेज=message संदेश=sandesh
    धन्यवाद=dhanyavaad शुक्रिया=shukriya बस=bas इतना=itna ही=hi क्या=kya कब=kab कैसे=kaise कितना=kitna
    कितनी=kitni कितने=kitne कहाँ=kahan कहां=kahan बाय=bye ओके=ok
"""
_DEVANAGARI_WORDS: dict[str, str] = {k: v for k, _, v in (pair.partition("=") for pair in _DEVANAGARI_PAIRS.split())}
_DEVANAGARI_DIGITS = str.maketrans("०१२३४५६७८९", "0123456789")
_DEVANAGARI_RE = re.compile(r"[\u0900-\u097F]+")


def _romanise(text: str) -> str:
    """Devanagari digits and the known Devanagari words to Roman script."""
    text = text.translate(_DEVANAGARI_DIGITS).replace("।", " ")
    return _DEVANAGARI_RE.sub(lambda m: _DEVANAGARI_WORDS.get(m.group(0), m.group(0)), text)


# Words that show a turn is Hinglish, so that "sham" is evening and "is friday" this Friday
# ("sham" itself is also English, and proves nothing).
_HINGLISH_MARKERS = HINDI_WORDS - {"sham"}


def normalise(text: str) -> str:
    """Lower-case, number words to digits, clock times to H:MM, Hinglish date and time
    words to English. Idempotent."""
    if _DEVANAGARI_RE.search(text):
        text = _romanise(text)
    hinglish = any(w in _HINGLISH_MARKERS for w in re.findall(r"[a-z']+", text.lower()))
    text = text.lower().replace("-", " ").replace(",", " ").replace("?", " ").replace("!", " ")
    text = re.sub(r"\.(?!\d)", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = _words_to_numbers(text)
    hindi = hinglish or _HI_TRIGGER.search(text) is not None
    if hindi:
        text = _hindi_numbers(text)
    text = _clock_phrases(_numeric_clock(text))  # "quarter to 2 baje": the clock phrase first
    if hindi:
        text = _clock_phrases(_hindi(text, hinglish))
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
    rf"{_NOT_MONEY}\b\d{{1,2}}[.:]\d(?![\d.:])(?!\s*{_QTY_H}\b)"
    rf"|{_NOT_MONEY}\b\d{{1,2}}\.\d{{3,}}(?!\s*{_QTY_H}\b)"
    r"|\b(?:quarter|half)\s+(?:past|to|after|before)\b(?!\s+\d)"
    r"|(?<![:\d])\b\d{1,2}\s+(?:minutes?\s+)?past\b(?!\s+\d)"
    rf"|\b{_BAJE}\b"
    rf"|\b(?:{_SAADE}|{_SAWA}|{_PAUNE})\b(?!\s+(?:\d+\s+)?{_QTY_H}\b)"
    rf"|\b\d{{1,2}}\s+and\s+a\s+(?:half|quarter)\b(?!\s+{_QTY_H}\b)"
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
