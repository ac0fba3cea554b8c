"""Spoken dates and times: examples, and properties that hold for every instant."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialgraph.tools.speech_format import (
    MONTH_NAMES,
    WEEKDAY_NAMES,
    ordinal,
    spoken_date,
    spoken_datetime,
    spoken_digits,
    spoken_list,
    spoken_time,
)


@pytest.mark.parametrize(
    ("at", "words"),
    [
        (dt.datetime(2026, 5, 5, 14, 30), "Tuesday the 5th of May at 2:30 in the afternoon"),
        (dt.datetime(2026, 5, 5, 12, 0), "Tuesday the 5th of May at noon"),
        (dt.datetime(2026, 5, 5, 0, 0), "Tuesday the 5th of May at midnight"),
        (dt.datetime(2026, 11, 1, 9, 0), "Sunday the 1st of November at 9 in the morning"),
        (dt.datetime(2026, 11, 22, 18, 5), "Sunday the 22nd of November at 6:05 in the evening"),
        (dt.datetime(2026, 11, 27, 23, 30), "Friday the 27th of November at 11:30 at night"),
        (dt.datetime(2026, 12, 13, 0, 15), "Sunday the 13th of December at 12:15 at night"),
        (dt.datetime(2026, 12, 31, 12, 45), "Thursday the 31st of December at 12:45 in the afternoon"),
    ],
)
def test_examples(at: dt.datetime, words: str) -> None:
    assert spoken_datetime(at) == words


def test_year_only_when_it_differs() -> None:
    assert spoken_date(dt.date(2027, 1, 3), today=dt.date(2026, 12, 30)) == "Sunday the 3rd of January 2027"
    assert spoken_date(dt.date(2026, 12, 31), today=dt.date(2026, 12, 30)) == "Thursday the 31st of December"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (23, "23rd"),
        (30, "30th"),
    ],
)
def test_ordinals(n: int, text: str) -> None:
    assert ordinal(n) == text


def test_lists_and_digits() -> None:
    assert spoken_list([]) == ""
    assert spoken_list(["a"]) == "a"
    assert spoken_list(["a", "b"], conjunction="or") == "a or b"
    assert spoken_list(["a", "b", "c"]) == "a, b and c"
    assert spoken_digits("+1 (555) 010-4567") == "4 5 6 7"


_PHRASE = re.compile(
    r"^(?P<weekday>[A-Z][a-z]+day) the (?P<day>\d{1,2})(st|nd|rd|th) of (?P<month>[A-Z][a-z]+) at "
    r"(?:(?P<special>noon|midnight)|(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))? "
    r"(?P<part>in the morning|in the afternoon|in the evening|at night))$"
)


def parse_back(words: str, year: int) -> dt.datetime:
    """Invert spoken_datetime (the year is not spoken): proves the phrase is unambiguous."""
    m = _PHRASE.match(words)
    assert m, words
    day = dt.date(year, MONTH_NAMES.index(m["month"]) + 1, int(m["day"]))
    assert WEEKDAY_NAMES[day.weekday()] == m["weekday"]
    if m["special"]:
        return dt.datetime.combine(day, dt.time(12 if m["special"] == "noon" else 0))
    hour, minute, part = int(m["hour"]), int(m["minute"] or 0), m["part"]
    assert 1 <= hour <= 12 and 0 <= minute <= 59
    if m["minute"] is not None:
        assert minute != 0, "whole hours are said without ':00'"
    if part == "in the morning":
        hour24 = hour % 12
    elif part in ("in the afternoon", "in the evening"):
        hour24 = hour % 12 + 12
    else:  # at night: 9-11 pm, or 12-4 am
        hour24 = hour + 12 if 9 <= hour <= 11 else hour % 12
    return dt.datetime.combine(day, dt.time(hour24, minute))


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 12, 31)))
def test_phrase_parses_back_to_the_same_minute(at: dt.datetime) -> None:
    at = at.replace(second=0, microsecond=0)
    words = spoken_datetime(at)
    assert parse_back(words, at.year) == at
    assert "0:" not in words.split(" at ", 1)[1][:2]


@given(st.times())
def test_time_words_structure(t: dt.time) -> None:
    words = spoken_time(t)
    assert (words == "noon") == (t.hour == 12 and t.minute == 0)
    assert (words == "midnight") == (t.hour == 0 and t.minute == 0)
    assert not re.search(r"\b0:|\b(1[3-9]|2\d):", words), words
    assert ":00" not in words


@given(st.dates(), st.dates())
def test_date_words_name_weekday_day_month(day: dt.date, today: dt.date) -> None:
    words = spoken_date(day, today=today)
    assert words.startswith(
        WEEKDAY_NAMES[day.weekday()] + " the " + ordinal(day.day) + " of " + MONTH_NAMES[day.month - 1]
    )
    assert words.endswith(str(day.year)) == (day.year != today.year)
