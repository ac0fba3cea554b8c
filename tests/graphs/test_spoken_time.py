"""Spoken dates and times (pure): properties with hypothesis, plus the forms callers use."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialgraph.graphs.intents import classify, extract_name, is_no, is_yes, pick_ordinal
from dialgraph.graphs.spoken_time import MONTH_NAMES, WEEKDAY_NAMES, normalise, parse_when

NOW = dt.datetime(2026, 11, 20, 10, 0)  # a Friday
UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty"}
ORD = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
]


def words(n: int) -> str:
    if n < 20:
        return UNITS[n]
    tens, unit = divmod(n, 10)
    return TENS[tens] + ("" if unit == 0 else f" {UNITS[unit]}")


def ordinal_words(n: int) -> str:
    if n < 20:
        return ORD[n - 1]
    tens, unit = divmod(n, 10)
    if unit == 0:
        return {2: "twentieth", 3: "thirtieth"}[tens]
    return f"{TENS[tens]} {ORD[unit - 1]}"


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("the fifth at half past two", dt.datetime(2026, 12, 5, 14, 30)),
        ("next friday at 10", dt.datetime(2026, 11, 27, 10, 0)),
        ("Friday at ten thirty a.m.", dt.datetime(2026, 11, 27, 10, 30)),
        ("the twenty third of December at quarter to four", dt.datetime(2026, 12, 23, 15, 45)),
        ("27/11 at 9am", dt.datetime(2026, 11, 27, 9, 0)),
        ("can I come in at 4 tomorrow?", dt.datetime(2026, 11, 21, 16, 0)),
        ("Monday at noon", dt.datetime(2026, 11, 23, 12, 0)),
        ("ten oh five tomorrow", dt.datetime(2026, 11, 21, 10, 5)),
        ("December 3rd at 9 in the morning", dt.datetime(2026, 12, 3, 9, 0)),
        ("the 3rd of March at 2:30 in the afternoon", dt.datetime(2027, 3, 3, 14, 30)),
        ("in three days at two pm", dt.datetime(2026, 11, 23, 14, 0)),
    ],
)
def test_spoken_forms(said: str, expected: dt.datetime) -> None:
    when = parse_when(said, NOW)
    assert when is not None and when.time is not None
    assert when.as_datetime() == expected


def test_periods_are_approximate_and_dates_alone_have_no_time() -> None:
    morning = parse_when("tomorrow morning", NOW)
    assert morning is not None and morning.approximate and morning.iso() == "2026-11-21T09:00"
    day = parse_when("on Tuesday", NOW)
    assert day is not None and day.time is None and day.iso() == "2026-11-24"
    assert parse_when("I'd like an appointment", NOW) is None
    assert parse_when("may I book something", NOW) is None  # "may" is not a month


@given(st.integers(0, 59))
def test_number_words_become_digits(n: int) -> None:
    assert normalise(f"at {words(n)}").split()[-1] in (str(n), f"{n}:00") or n == 0


@given(st.integers(1, 12), st.sampled_from(["am", "pm"]), st.sampled_from([0, 15, 30, 45]))
def test_clock_phrases(hour: int, ampm: str, minute: int) -> None:
    forms = {
        0: [f"{words(hour)} o'clock {ampm}", f"{words(hour)} {ampm}"],
        15: [f"quarter past {words(hour)} {ampm}", f"{words(hour)} fifteen {ampm}"],
        30: [f"half past {words(hour)} {ampm}", f"{words(hour)} thirty {ampm}"],
        45: [f"{words(hour)} forty five {ampm}"],
    }[minute]
    h24 = hour % 12 + (12 if ampm == "pm" else 0)
    for form in forms:
        when = parse_when(f"tomorrow at {form}", NOW)
        assert when is not None and when.time == dt.time(h24, minute), form


@given(st.integers(1, 12), st.sampled_from([15, 30, 45]))
def test_quarter_to_and_past_without_am_pm_are_business_hours(hour: int, minute: int) -> None:
    said = {15: f"quarter past {words(hour)}", 30: f"half past {words(hour)}", 45: f"quarter to {words(hour % 12 + 1)}"}
    when = parse_when(f"monday at {said[minute]}", NOW)
    assert when is not None and when.time is not None
    assert when.time.minute == minute and 8 <= when.time.hour <= 19


@given(st.dates(min_value=dt.date(2026, 11, 21), max_value=dt.date(2027, 11, 19)))
def test_day_and_month_in_words_resolve_to_that_date(day: dt.date) -> None:
    for said in (
        f"the {ordinal_words(day.day)} of {MONTH_NAMES[day.month - 1]}",
        f"{MONTH_NAMES[day.month - 1]} {day.day}",
    ):
        when = parse_when(said, NOW)
        assert when is not None and when.date == day, said


@given(st.integers(0, 6), st.sampled_from(["", "next ", "on "]))
def test_weekdays_are_the_coming_one(weekday: int, prefix: str) -> None:
    when = parse_when(f"{prefix}{WEEKDAY_NAMES[weekday]} at 10am", NOW)
    assert when is not None
    assert when.date.weekday() == weekday and 1 <= (when.date - NOW.date()).days <= 7


@given(st.integers(1, 31))
def test_bare_ordinals_are_never_in_the_past(n: int) -> None:
    when = parse_when(f"the {ordinal_words(n)}", NOW)
    if when is not None:
        assert when.date >= NOW.date() and when.date.day == n


@given(
    st.lists(
        st.sampled_from(
            [
                "the",
                "second",
                "one",
                "at",
                "half",
                "past",
                "two",
                "twenty",
                "fifth",
                "monday",
                "pm",
                "o'clock",
                "quarter",
                "to",
                "9",
                "tomorrow",
            ]
        ),
        max_size=8,
    )
)
def test_normalise_is_idempotent_and_parse_never_goes_back(tokens: list[str]) -> None:
    text = " ".join(tokens)
    assert normalise(normalise(text)) == normalise(text)
    when = parse_when(text, NOW)
    if when is not None:
        assert when.as_datetime().date() >= NOW.date()


def test_intents_names_and_choices() -> None:
    assert classify(normalise("I'd like to book an appointment"), "scheduling") == "book"
    assert classify(normalise("can I move my appointment"), "scheduling") == "reschedule"
    assert classify(normalise("please cancel it"), "scheduling") == "cancel"
    assert classify(normalise("can I talk to a real person"), "scheduling") == "human"
    assert classify(normalise("no thanks, bye"), "scheduling") == "bye"
    assert classify(normalise("get me billing"), "support", {"billing": "billing team"}) == "human"
    assert extract_name("Hi, my name is ana lopez and I'd like to book") == "Ana Lopez"
    assert extract_name("I'm looking for a dentist") is None
    assert extract_name("uh, Bob Stone", expecting=True) == "Bob Stone"
    assert extract_name("next Friday at ten", expecting=True) is None
    assert is_yes("yes please") and is_no("no thank you") and not is_yes("no")
    assert pick_ordinal(normalise("the second one please"), 3) == 1
    assert pick_ordinal(normalise("the last one"), 3) == 2


def test_normalise_regression_clock_then_past_is_idempotent() -> None:
    # Found by hypothesis: "1:00 past 1" used to become "1:1:00" on a second pass.
    once = normalise("one o'clock past one")
    assert normalise(once) == once


def test_normalise_regression_repeated_oclock_is_idempotent() -> None:
    # Found by hypothesis: "1:00 o'clock" kept one "o'clock" per pass.
    once = normalise("one o'clock o'clock o'clock")
    assert once == "1:00" and normalise(once) == once


def test_moving_it_names_a_time_a_day_or_both() -> None:
    assert classify(normalise("I need to reschedule."), "scheduling") == "reschedule"
    assert classify(normalise("can we make it 4 instead"), "scheduling") == "reschedule"
    assert classify(normalise("could you make it Thursday"), "scheduling") == "reschedule"
    assert classify(normalise("I can't make it on Tuesday"), "scheduling") != "reschedule"
    assert classify(normalise("I'd like to make an appointment"), "scheduling") == "book"
    four = parse_when("can we make it 4 instead", NOW)
    assert four is not None and four.time == dt.time(16) and not four.dated
    three = parse_when("move my appointment to 3 pm", NOW)
    assert three is not None and three.time == dt.time(15) and not three.dated
    thursday = parse_when("move it to thursday", NOW)
    assert thursday is not None and thursday.dated and thursday.time is None
    both = parse_when("push it to thursday at 10", NOW)
    assert both is not None and both.dated and both.iso() == "2026-11-26T10:00"
    assert parse_when("make it 2 weeks later", NOW) is None  # "2" is not an hour here


def test_second_before_a_clock_phrase_stays_a_word_on_every_pass() -> None:
    # found by the property above: "second one past two" -> "second 2:01" -> "2nd 2:01"
    for said, once in (("second one past one", "second 1:01"), ("second one past two", "second 2:01")):
        assert normalise(said) == once and normalise(once) == once
