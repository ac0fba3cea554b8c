"""Tolerant reading of ISO local times in a flow's zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dialgraph.tools.timeparse import NewStart, TimeParseError, parse_time_of_day, parse_when, parse_when_lenient

KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T23:30",
        "2026-11-27 23:30",
        " 2026-11-27T23:30:00 ",
        "'2026-11-27T23:30:00.000'",
        "2026-11-27T18:00:00Z",
        "2026-11-27T18:00Z",
        "2026-11-27T23:30+05:30",
        "2026-11-27T13:00:00-05:00",
    ],
)
def test_forms_of_one_instant(text: str) -> None:
    got = parse_when(text, KOLKATA)
    assert got.has_time
    assert got.at.tzinfo is KOLKATA
    assert got.at.astimezone(dt.UTC) == dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.UTC)


def test_a_date_is_the_whole_day() -> None:
    got = parse_when("2026-11-27", KOLKATA)
    assert not got.has_time
    assert got.day == dt.date(2026, 11, 27)


@pytest.mark.parametrize(
    "text", ["", "tomorrow", "2026-13-01", "2026-11-27T25:00", "2026-02-30", "27/11/2026", "2026-11-27Z"]
)
def test_refuses_what_is_not_iso(text: str) -> None:
    with pytest.raises(TimeParseError):
        parse_when(text, KOLKATA)


def test_dst_gap_moves_forward() -> None:
    got = parse_when("2027-03-14T02:30", NEW_YORK)  # clocks jump 2:00 -> 3:00
    assert got.at.astimezone(dt.UTC) == dt.datetime(2027, 3, 14, 7, 30, tzinfo=dt.UTC)
    assert got.at.hour == 3


def test_lenient_natural_language_relative_to_now() -> None:
    now = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)  # Wednesday
    got = parse_when_lenient("tomorrow at 3pm", KOLKATA, now=now)
    assert got.has_time and got.at.replace(tzinfo=None) == dt.datetime(2026, 11, 26, 15, 0)
    day = parse_when_lenient("friday", KOLKATA, now=now)
    assert not day.has_time and day.day == dt.date(2026, 11, 27)
    with pytest.raises(TimeParseError):
        parse_when_lenient("whenever suits", KOLKATA, now=now)


zones = st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York", "Europe/London", "Australia/Lord_Howe"]).map(
    ZoneInfo
)
wall_times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0)
)


@given(wall_times, zones, st.sampled_from(["T", " "]))
def test_local_wall_time_round_trips(wall: dt.datetime, zone: ZoneInfo, sep: str) -> None:
    got = parse_when(wall.isoformat(sep=sep, timespec="minutes"), zone)
    exists = wall.replace(tzinfo=zone).astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) == wall
    if exists:
        assert got.at.replace(tzinfo=None) == wall
    else:  # inside a DST gap: moved forward, never backward
        assert got.at.replace(tzinfo=None) > wall


@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31), timezones=st.just(dt.UTC)),
    zones,
)
def test_utc_instants_keep_their_instant(at: dt.datetime, zone: ZoneInfo) -> None:
    at = at.replace(second=0, microsecond=0)
    got = parse_when(at.strftime("%Y-%m-%dT%H:%MZ"), zone)
    assert got.at == at and got.at.tzinfo is zone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15:00", dt.time(15)),
        ("T15:00:00", dt.time(15)),
        ("3pm", dt.time(15)),
        ("3 PM", dt.time(15)),
        ("at 3:30 p.m.", dt.time(15, 30)),
        ("'9 am'", dt.time(9)),
        ("12 am", dt.time(0)),
        ("12pm", dt.time(12)),
        ("noon", dt.time(12)),
    ],
)
def test_a_bare_time_of_day(text: str, expected: dt.time) -> None:
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize("text", ["3", "13pm", "0am", "24:00", "15:60", "3m", "2026-11-27", "Thursday", "tomorrow 3pm"])
def test_a_bare_time_of_day_refuses_the_rest(text: str) -> None:
    with pytest.raises(TimeParseError):
        parse_time_of_day(text)


def test_new_start_fills_what_was_not_said_from_the_local_start() -> None:
    # Tuesday 01:00 in Kolkata is still Monday in UTC: the day kept must be the local one.
    current = dt.datetime(2026, 11, 23, 19, 30, tzinfo=dt.UTC)
    assert NewStart(time=dt.time(15)).on(current, KOLKATA) == dt.datetime(2026, 11, 24, 15, 0, tzinfo=KOLKATA)
    thursday = NewStart(day=dt.date(2026, 11, 26)).on(current, KOLKATA)
    assert thursday == dt.datetime(2026, 11, 26, 1, 0, tzinfo=KOLKATA)
    both = NewStart(day=dt.date(2026, 11, 26), time=dt.time(9, 30)).on(current, KOLKATA)
    assert both == dt.datetime(2026, 11, 26, 9, 30, tzinfo=KOLKATA)


@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31), timezones=st.just(dt.UTC)),
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31), timezones=st.just(dt.UTC)),
    zones,
)
@example(  # 01:30 EST, the second 01:30 of the night New York's clocks go back
    dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.UTC), dt.datetime(2026, 6, 1, tzinfo=dt.UTC), NEW_YORK
)
def test_a_whole_instant_moves_to_exactly_that_instant(at: dt.datetime, current: dt.datetime, zone: ZoneInfo) -> None:
    at = at.replace(second=0, microsecond=0)  # including the repeated hour when clocks go back
    got = NewStart.of(parse_when(at.strftime("%Y-%m-%dT%H:%MZ"), zone)).on(current, zone)
    # In UTC: PEP 495 makes == across zones false for a time in a repeated hour.
    assert got.astimezone(dt.UTC) == at and got.tzinfo is zone
