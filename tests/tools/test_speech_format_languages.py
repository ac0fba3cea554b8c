"""Spoken formatting by language: Indian-style dates, Hindi times of day, lakh and crore,
rupees, phone numbers in groups, and which language a reply is in."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialgraph.tools.speech_format import (
    grouped_phone,
    hindi_part_of_day,
    indian_grouping,
    speak_money,
    speech_style,
    spoken_amount,
    spoken_date,
    spoken_datetime,
    spoken_list,
    spoken_phone,
    spoken_rupees,
    spoken_time,
    turn_language,
)


@pytest.mark.parametrize(
    ("at", "style", "words"),
    [
        (dt.datetime(2026, 12, 10, 10, 0), "en", "Thursday the 10th of December at 10 in the morning"),
        (dt.datetime(2026, 12, 10, 10, 0), "en-IN", "Thursday, 10 December at 10 in the morning"),
        (dt.datetime(2026, 12, 8, 10, 0), "hi-en", "Tuesday, 8 December ko subah 10 baje"),
        (dt.datetime(2026, 12, 8, 14, 30), "hi-en", "Tuesday, 8 December ko dopahar 2:30 baje"),
        (dt.datetime(2026, 12, 8, 17, 0), "hi-en", "Tuesday, 8 December ko shaam 5 baje"),
        (dt.datetime(2026, 12, 8, 21, 15), "hi-en", "Tuesday, 8 December ko raat 9:15 baje"),
        (dt.datetime(2026, 12, 8, 12, 0), "hi-en", "Tuesday, 8 December ko dopahar 12 baje"),
        (dt.datetime(2026, 12, 8, 0, 0), "hi-en", "Tuesday, 8 December ko raat 12 baje"),
    ],
)
def test_dates_and_times_by_style(at: dt.datetime, style: str, words: str) -> None:
    assert spoken_datetime(at, style=style) == words


def test_the_year_is_said_only_when_it_differs() -> None:
    day = dt.date(2027, 1, 4)
    assert spoken_date(day, today=dt.date(2026, 12, 7), style="en-IN") == "Monday, 4 January 2027"
    assert spoken_date(day, today=dt.date(2027, 1, 1), style="hi-en") == "Monday, 4 January"


@given(st.times())
def test_every_hindi_time_names_its_part_of_day_and_a_12_hour_clock(t: dt.time) -> None:
    words = spoken_time(t.replace(second=0, microsecond=0), style="hi-en").split()
    assert words[0] == hindi_part_of_day(t.hour) and words[-1] == "baje"
    hour = int(words[1].split(":")[0])
    assert 1 <= hour <= 12


def test_lists_join_with_hindi_words() -> None:
    assert spoken_list(["subah 9 baje", "subah 9:30 baje"], conjunction="or", style="hi-en") == (
        "subah 9 baje ya subah 9:30 baje"
    )
    assert spoken_list(["a", "b", "c"], style="hi-en") == "a, b aur c"
    assert spoken_list(["a", "b"], conjunction="or", style="en-IN") == "a or b"


@pytest.mark.parametrize(
    ("n", "grouped"),
    [(0, "0"), (999, "999"), (1500, "1,500"), (100000, "1,00,000"), (2500000, "25,00,000"), (25000000, "2,50,00,000")],
)
def test_indian_grouping(n: int, grouped: str) -> None:
    assert indian_grouping(n) == grouped


@pytest.mark.parametrize(
    ("value", "said"),
    [(1500, "1500"), (99999, "99999"), (100000, "1 lakh"), (250000, "2.5 lakh"), (10_000_000, "1 crore"),
     (25_000_000, "2.5 crore"), (12_345_678, "1.23 crore")],
)  # fmt: skip
def test_amounts_in_lakh_and_crore(value: float, said: str) -> None:
    assert spoken_amount(value) == said


def test_rupees_are_said_in_the_replys_language() -> None:
    assert spoken_rupees(1500) == "1500 rupees"
    assert spoken_rupees(1500, style="hi-en") == "1500 rupaye"
    assert speak_money("Cleaning costs ₹1,500 and implants Rs. 2,50,000.") == (
        "Cleaning costs 1500 rupees and implants 2.5 lakh rupees."
    )
    assert speak_money("Package ₹2.5 crore tak", style="hi-en") == "Package 2.5 crore rupaye tak"
    assert speak_money("INR 75000 only") == "75000 rupees only"
    assert speak_money("no amount here, 1500 steps") == "no amount here, 1500 steps"


@pytest.mark.parametrize(
    ("number", "grouped", "spoken"),
    [
        ("9876543210", "98765 43210", "9 8 7 6 5, 4 3 2 1 0"),
        ("+919876543210", "+91 98765 43210", "plus 9 1, 9 8 7 6 5, 4 3 2 1 0"),
        ("09876543210", "0 98765 43210", "0, 9 8 7 6 5, 4 3 2 1 0"),
        ("+15551234567", "+1 555 123 4567", "plus 1, 5 5 5, 1 2 3, 4 5 6 7"),
    ],
)
def test_phone_numbers_are_read_in_groups(number: str, grouped: str, spoken: str) -> None:
    assert grouped_phone(number) == grouped
    assert spoken_phone(number) == spoken


@given(st.text(alphabet="0123456789", min_size=7, max_size=15))
def test_phone_groups_keep_every_digit_in_order(digits: str) -> None:
    assert grouped_phone(digits).replace(" ", "") == digits


def test_speech_style_of_flow_and_reply() -> None:
    assert speech_style("en", "en") == "en"
    assert speech_style("en-IN", "en") == "en-IN"
    assert speech_style("hi-en", "en") == "en-IN"
    assert speech_style("hi-en", "hi-en") == "hi-en"
    assert speech_style("hi", "hi") == "hi-en"


def test_the_reply_follows_the_latest_turn_that_shows_a_language() -> None:
    assert turn_language("en", ["kal subah 11 baje appointment chahiye"]) == "en"  # an English flow stays English
    assert turn_language("hi-en", []) == "hi-en"
    assert turn_language("en-IN", []) == "en"
    hinglish = ["kal subah 11 baje appointment chahiye"]
    assert turn_language("hi-en", hinglish) == "hi-en"
    assert turn_language("en-IN", hinglish) == "hi-en"
    # a name, a number or "ok" shows no language: the turns before it decide
    assert turn_language("hi-en", [*hinglish, "Rahul Sharma"]) == "hi-en"
    assert turn_language("hi-en", ["I want to book an appointment please", "Rahul Sharma"]) == "en"
    # a switch is followed, both ways
    assert turn_language("hi-en", [*hinglish, "Actually can you make it Friday at 2 pm please"]) == "en"
    assert turn_language("en-IN", ["I want to book an appointment", "agle mahine tak"]) == "hi-en"
