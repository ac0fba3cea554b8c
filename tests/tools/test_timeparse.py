"""Tolerant reading of ISO local times in a flow's zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools.timeparse import TimeParseError, parse_when, parse_when_lenient

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
