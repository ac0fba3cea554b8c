"""The words a spoken date or time is made of, English and Hindi alike (pure): number words
and ordinals to digits, the names of days and months, and the words that make a number a
quantity rather than a clock time. ``spoken_time`` and ``hinglish_time`` read with them."""

from __future__ import annotations

import re

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
MONTH_RE = "|".join(m for m in MONTH_NAMES) + "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"


def ordinal_suffix(n: int) -> str:
    """5 -> "5th", 23 -> "23rd", 11 -> "11th"."""
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def words_to_numbers(text: str) -> str:
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


# "second one past two" -> "second 2:01": a second pass must keep "second" before a clock too
# (and "second 1st", from "second one tarikh")
_A_CLOCK = re.compile(r"\d{1,2}:\d\d$|\d{1,2}(?:st|nd|rd|th)$")


# Words after a number that make it a quantity, not a clock time ("10.50 rupees", "2.5 lakh").
QTY = (
    r"(?:%|percent|per cent|dollars?|bucks|rupees?|rupaye|rupay|rupiya|rs|inr|pounds?|euros?|lakhs?|lacs?|crores?"
    r"|karod|k|thousand|hundred|hazaar|hazar|sau|kgs?|kilos?|grams?|kms?|miles?|metres?|meters?|litres?|liters?"
    r"|stars?|points?|years?|yrs|saal|months?|mahine|mahina|weeks?|hafte|hafta|days?|din|ghante|ghanta|minutes?"
    r"|mins?|seconds?|secs?|people|persons?|log|logon|times|baar|guna|x|gb|mb|inch(?:es)?|feet|foot|ft|cm|mm"
    r"|patients?|members?|rooms?|floors?|ms|milliseconds?|bytes?|kb)"
)
QTY_H = rf"(?:{QTY}|hours?|hrs?)"
NOT_MONEY = r"(?<![\d.:$£€₹#])(?<!rs )(?<!inr )"
