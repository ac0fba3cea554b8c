"""Times and dates as ASR writes them, in English, Indian English and Hinglish: every
surface form of a slot lands on that exact slot, and a form that names minutes is never
read as the full hour (unreadable forms give None: the agent asks again)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialgraph.graphs.spoken_time import normalise, parse_date, parse_time, parse_when, unreadable_time

NOW = dt.datetime(2026, 12, 2, 8, 0)  # a Wednesday, 8 in the morning
TODAY, TOMORROW, THURSDAY = "2026-12-02", "2026-12-03", "2026-12-03"

UNREADABLE = "unreadable"  # names a time that cannot be read completely: nothing, never the full hour
NOT_A_TIME = "not a time"  # quantities, codes, years: no time of day

# (said, language, what it is: the slot, ISO local date[Thh:mm] with a "~" suffix when only a
# period was named; or UNREADABLE; or NOT_A_TIME)
SAID: list[tuple[str, str, str]] = [
    # --- 10:30 in every written form, no day: today (still ahead at 8:00) -------------------
    ("10.30", "en", f"{TODAY}T10:30"),
    ("at 10.30", "en", f"{TODAY}T10:30"),
    ("1030", "en", f"{TODAY}T10:30"),
    ("at 1030", "en", f"{TODAY}T10:30"),
    ("10:30", "en", f"{TODAY}T10:30"),
    ("at 10:30", "en", f"{TODAY}T10:30"),
    ("10 30", "en", f"{TODAY}T10:30"),
    ("at 10 30", "en", f"{TODAY}T10:30"),
    ("10-30", "en", f"{TODAY}T10:30"),
    ("ten thirty", "en", f"{TODAY}T10:30"),
    ("at ten thirty", "en", f"{TODAY}T10:30"),
    ("half past ten", "en", f"{TODAY}T10:30"),
    ("at half past 10", "en", f"{TODAY}T10:30"),
    ("10.30am", "en", f"{TODAY}T10:30"),
    ("10:30 a.m.", "en", f"{TODAY}T10:30"),
    ("10.30 a.m.", "en", f"{TODAY}T10:30"),
    ("1030am", "en", f"{TODAY}T10:30"),
    ("10 30 am", "en", f"{TODAY}T10:30"),
    ("10h30", "en", f"{TODAY}T10:30"),
    ("at 10 and a half", "en", f"{TODAY}T10:30"),
    ("half ten", "en", f"{TODAY}T10:30"),
    # --- Indian English ---------------------------------------------------------------------
    ("10.30 in the morning", "en-IN", f"{TODAY}T10:30"),
    ("tomorrow 10.30", "en-IN", f"{TOMORROW}T10:30"),
    ("tomorrow morning 10.30", "en-IN", f"{TOMORROW}T10:30"),
    ("tomorrow at 1030 hours", "en-IN", f"{TOMORROW}T10:30"),
    ("tomorrow 10 o'clock", "en-IN", f"{TOMORROW}T10:00"),
    ("tomorrow 10", "en-IN", f"{TOMORROW}T10:00"),
    ("tomorrow morning 10", "en-IN", f"{TOMORROW}T10:00"),
    ("by 10.30 on Thursday", "en-IN", f"{THURSDAY}T10:30"),
    ("Thursday 10.30", "en-IN", f"{THURSDAY}T10:30"),
    ("8th December at half past 10", "en-IN", "2026-12-08T10:30"),
    ("8 December 10.30", "en-IN", "2026-12-08T10:30"),
    ("on 8th Dec at 10:30 am", "en-IN", "2026-12-08T10:30"),
    ("5.30 in the evening", "en-IN", f"{TODAY}T17:30"),
    ("tomorrow evening at 5.30", "en-IN", f"{TOMORROW}T17:30"),
    ("at 2.30", "en-IN", f"{TODAY}T14:30"),
    ("2.30 pm", "en-IN", f"{TODAY}T14:30"),
    ("quarter to 11", "en-IN", f"{TODAY}T10:45"),
    ("10.45", "en-IN", f"{TODAY}T10:45"),
    ("prepone it to 9.15", "en-IN", f"{TODAY}T09:15"),
    ("10.30pm", "en", f"{TODAY}T22:30"),
    ("tonight at 8.30", "en", f"{TODAY}T20:30"),
    ("10 at night", "en", f"{TODAY}T22:00"),
    ("at 12.30", "en", f"{TODAY}T12:30"),
    ("1.30", "en", f"{TODAY}T13:30"),
    # --- Hinglish ---------------------------------------------------------------------------
    ("saade das", "hi-en", f"{TODAY}T10:30"),
    ("saade 10 baje", "hi-en", f"{TODAY}T10:30"),
    ("saade das baje ko", "hi-en", f"{TODAY}T10:30"),
    ("subah 10:30", "hi-en", f"{TODAY}T10:30"),
    ("subah saade das baje", "hi-en", f"{TODAY}T10:30"),
    ("10.30 baje", "hi-en", f"{TODAY}T10:30"),
    ("10.30 ko", "hi-en", f"{TODAY}T10:30"),
    ("10 bajkar 30 minute", "hi-en", f"{TODAY}T10:30"),
    ("das bajkar tees minute", "hi-en", f"{TODAY}T10:30"),
    ("11 baje", "hi-en", f"{TODAY}T11:00"),
    ("11 bajkar 30 minute", "hi-en", f"{TODAY}T11:30"),
    ("sawa 11", "hi-en", f"{TODAY}T11:15"),
    ("paune 10", "hi-en", f"{TODAY}T09:45"),
    ("paune ek baje", "hi-en", f"{TODAY}T12:45"),
    ("dhai baje", "hi-en", f"{TODAY}T14:30"),
    ("dedh baje", "hi-en", f"{TODAY}T13:30"),
    ("do baje", "hi-en", f"{TODAY}T14:00"),
    ("teen baje", "hi-en", f"{TODAY}T15:00"),
    ("sawa do baje", "hi-en", f"{TODAY}T14:15"),
    ("shaam 5 baje", "hi-en", f"{TODAY}T17:00"),
    ("paanch baje shaam ko", "hi-en", f"{TODAY}T17:00"),
    ("subah 10 baje", "hi-en", f"{TODAY}T10:00"),
    ("raat 8 baje", "hi-en", f"{TODAY}T20:00"),
    ("dopahar 2 baje", "hi-en", f"{TODAY}T14:00"),
    ("dopahar 12 baje", "hi-en", f"{TODAY}T12:00"),
    ("kal subah 10 baje ka appointment chahiye", "hi-en", f"{TOMORROW}T10:00"),
    ("kal subah das", "hi-en", f"{TOMORROW}T10:00"),
    ("kal 11", "hi-en", f"{TOMORROW}T11:00"),
    ("kal do baje", "hi-en", f"{TOMORROW}T14:00"),
    ("kal saade das baje", "hi-en", f"{TOMORROW}T10:30"),
    ("kal 10.30", "hi-en", f"{TOMORROW}T10:30"),
    ("Mujhe Thursday ko 11 baje appointment chahiye", "hi-en", f"{THURSDAY}T11:00"),
    ("guruvar ko subah 11 baje", "hi-en", f"{THURSDAY}T11:00"),
    ("parson shaam 5 baje", "hi-en", "2026-12-04T17:00"),
    ("8 December ko 10.30 baje", "hi-en", "2026-12-08T10:30"),
    ("aath december ko saade gyarah", "hi-en", "2026-12-08T11:30"),
    ("agle Monday dopahar 3 baje", "hi-en", "2026-12-07T15:00"),
    ("shukravar ko sawa 10", "hi-en", "2026-12-04T10:15"),
    # --- Hindi in Devanagari (Deepgram's "hi") ----------------------------------------------
    ("कल सुबह 10 बजे का अपॉइंटमेंट चाहिए", "hi", f"{TOMORROW}T10:00"),
    ("कल सुबह साढ़े दस बजे", "hi", f"{TOMORROW}T10:30"),
    ("गुरुवार को ११ बजे", "hi", f"{THURSDAY}T11:00"),
    ("शाम 5:30 बजे", "hi", f"{TODAY}T17:30"),
    ("8 दिसंबर को 10.30 बजे", "hi", "2026-12-08T10:30"),
    ("परसों दोपहर ढाई बजे", "hi", "2026-12-04T14:30"),
    # --- periods alone: approximate ---------------------------------------------------------
    ("kal subah", "hi-en", f"{TOMORROW}T09:00~"),
    ("kal shaam", "hi-en", f"{TOMORROW}T17:00~"),
    ("aaj dopahar", "hi-en", f"{TODAY}T14:00~"),
    ("kal raat", "hi-en", f"{TOMORROW}T20:00~"),
    ("tomorrow morning", "en", f"{TOMORROW}T09:00~"),
    ("friday evening", "en", "2026-12-04T17:00~"),
    # --- days alone -------------------------------------------------------------------------
    ("aaj", "hi-en", TODAY),
    ("kal", "hi-en", TOMORROW),
    ("parson", "hi-en", "2026-12-04"),
    ("parso", "hi-en", "2026-12-04"),
    ("Thursday ko", "hi-en", THURSDAY),
    ("somvar ko", "hi-en", "2026-12-07"),
    ("mangalwar", "hi-en", "2026-12-08"),
    ("budhvar ko", "hi-en", "2026-12-09"),  # today is Wednesday: the next one
    ("guruwar", "hi-en", THURSDAY),
    ("brihaspativar", "hi-en", THURSDAY),
    ("veervar ko", "hi-en", THURSDAY),
    ("shukrawar", "hi-en", "2026-12-04"),
    ("shanivar ko", "hi-en", "2026-12-05"),
    ("ravivar", "hi-en", "2026-12-06"),
    ("itwar ko", "hi-en", "2026-12-06"),
    ("agle Monday", "hi-en", "2026-12-07"),
    ("next Friday ko", "hi-en", "2026-12-04"),
    ("is Friday ko", "hi-en", "2026-12-04"),
    ("8 December ko", "hi-en", "2026-12-08"),
    ("8 tarikh ko", "hi-en", "2026-12-08"),
    ("agle hafte", "hi-en", "2026-12-07"),
    ("agle mahine 5 tarikh", "hi-en", "2027-01-05"),
    ("next month on the 5th", "en", "2027-01-05"),
    ("the 5th", "en", "2026-12-05"),
    # --- forms that name a time which cannot be read completely ------------------------------
    ("at 10.3", "en", UNREADABLE),
    ("10:3", "en", UNREADABLE),
    ("tomorrow at 10.5", "en", UNREADABLE),
    ("tomorrow at half past", "en", UNREADABLE),
    ("at quarter to", "en", UNREADABLE),
    ("at 10 past", "en", UNREADABLE),
    ("at 10 and a quarter", "en", UNREADABLE),
    ("at 10 and 30 minutes", "en", UNREADABLE),
    ("kal saade baje", "hi-en", UNREADABLE),
    ("kitne baje", "hi-en", UNREADABLE),
    ("kal solah baje", "hi-en", UNREADABLE),
    ("raat 12 baje", "hi-en", UNREADABLE),
    ("raat 2 baje", "hi-en", UNREADABLE),
    ("Sunday at 12:15 at night", "en", UNREADABLE),
    ("tonight at 1", "en", UNREADABLE),  # after midnight: which day?
    # --- not a time at all -------------------------------------------------------------------
    ("it costs 10.50 rupees", "en-IN", NOT_A_TIME),
    ("rs 10.30 only", "en-IN", NOT_A_TIME),
    ("saade teen lakh", "hi-en", NOT_A_TIME),
    ("dhai lakh budget hai", "hi-en", NOT_A_TIME),
    ("call 555 765 4321", "en", NOT_A_TIME),
    ("in 2026", "en", NOT_A_TIME),
    ("my pin is 1030", "en", NOT_A_TIME),
    ("good morning", "en", NOT_A_TIME),
    ("good night", "en", NOT_A_TIME),
    ("it's a sham", "en", NOT_A_TIME),
    ("16, 24 or 32 bytes", "en", NOT_A_TIME),
    ("speculative decode at 240 ms", "en", NOT_A_TIME),
]


SLOT = "slot"  # the rows of SAID that land on a slot


def _said(kind: str) -> list[Any]:
    """The rows of ``SAID`` of one kind (SLOT, UNREADABLE or NOT_A_TIME), with readable ids."""
    return [
        pytest.param(said, language, want, id=f"{language}:{said}")
        for said, language, want in SAID
        if (want if want in (UNREADABLE, NOT_A_TIME) else SLOT) == kind
    ]


def _slot(said: str) -> str | None:
    when = parse_when(said, NOW)
    if when is None:
        return None
    return when.iso() + ("~" if when.approximate else "")


@pytest.mark.parametrize(("said", "language", "slot"), _said(SLOT))
def test_each_surface_form_lands_on_its_slot(said: str, language: str, slot: str) -> None:
    assert _slot(said) == slot, (said, language, normalise(said))


@pytest.mark.parametrize(("said", "language", "what"), _said(UNREADABLE))
def test_a_time_that_cannot_be_read_gives_nothing_not_the_full_hour(said: str, language: str, what: str) -> None:
    assert unreadable_time(normalise(said)) or parse_time(normalise(said))[0] is None
    assert parse_when(said, NOW) is None, (said, language, what, normalise(said))


@pytest.mark.parametrize(("said", "language", "what"), _said(NOT_A_TIME))
def test_numbers_that_are_not_times_give_no_time(said: str, language: str, what: str) -> None:
    when = parse_when(said, NOW)
    assert when is None or when.time is None, (said, language, what, normalise(said), when)


def test_undated_times_say_so_and_dated_ones_too() -> None:
    bare = parse_when("10.30", NOW)
    assert bare is not None and not bare.dated and not bare.approximate
    later = parse_when("saade das", NOW.replace(hour=11))  # already past today: tomorrow
    assert later is not None and later.iso() == f"{TOMORROW}T10:30" and not later.dated
    dated = parse_when("kal saade das", NOW)
    assert dated is not None and dated.dated


_HOURS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
_MINUTES = {5: "oh five", 10: "ten", 15: "fifteen", 20: "twenty", 25: "twenty five", 30: "thirty", 35: "thirty five"}
_MINUTES |= {40: "forty", 45: "forty five", 50: "fifty", 55: "fifty five"}


def _written(hour: int, minute: int) -> list[str]:
    """Every way ASR writes h:mm (hour 1-12, minute a non-zero multiple of 5)."""
    forms = [
        f"{hour}.{minute:02d}",
        f"{hour}{minute:02d}",
        f"{hour}:{minute:02d}",
        f"{hour} {minute:02d}",
        f"{hour}-{minute:02d}",
        f"{hour}h{minute:02d}",
        f"{_HOURS[hour - 1]} {_MINUTES[minute]}",
        f"{hour} {_MINUTES[minute]}",
    ]
    if minute == 30:
        forms += [f"half past {_HOURS[hour - 1]}", f"saade {hour}", f"{hour} bajkar 30 minute"]
    if minute == 15:
        forms += [f"quarter past {hour}", f"sawa {hour}"]
    if minute == 45:
        forms += [f"quarter to {hour % 12 + 1}", f"paune {hour % 12 + 1}"]
    return forms


@given(
    st.integers(1, 12),
    st.sampled_from(sorted(_MINUTES)),
    st.sampled_from(["", "at ", "by ", "tomorrow ", "tomorrow at ", "kal ", "Thursday ko "]),
    st.sampled_from(["", " ko", " baje", " please"]),
)
def test_every_written_form_of_a_time_is_the_same_slot(hour: int, minute: int, before: str, after: str) -> None:
    slots = set()
    for form in _written(hour, minute):
        said = f"{before}{form}{after}"
        when = parse_when(said, NOW)
        assert when is not None and when.time is not None, (said, normalise(said))
        assert when.time.minute == minute, (said, normalise(said), when)  # never the full hour
        slots.add(when.as_datetime())
    assert len(slots) == 1, slots


@given(st.integers(1, 12), st.sampled_from(["", "at ", "kal "]))
def test_am_and_pm_forms_with_minutes(hour: int, before: str) -> None:
    for ampm, h24 in (("am", hour % 12), ("pm", hour % 12 + 12)):
        for form in (f"{hour}.30{ampm}", f"{hour}.30 {ampm[0]}.m.", f"{hour}30 {ampm}", f"{hour} 30 {ampm}"):
            when = parse_when(f"{before}{form}", NOW)
            assert when is not None and when.time == dt.time(h24, 30), (form, normalise(form))


def test_parse_date_keeps_the_month_day_over_the_weekday() -> None:
    # the words of a Hinglish tool result: "Monday, 7 December ko ..."
    assert parse_date(normalise("Monday, 7 December ko"), NOW) == dt.date(2026, 12, 7)


@given(st.text(alphabet="abcdehijklmnoprstuvwyz .:0123456789", max_size=40))
def test_normalise_is_idempotent_on_any_text(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


@given(
    st.lists(
        st.sampled_from(
            [
                "kal",
                "aaj",
                "parson",
                "subah",
                "shaam",
                "raat",
                "dopahar",
                "saade",
                "sawa",
                "paune",
                "dhai",
                "dedh",
                "das",
                "do",
                "teen",
                "gyarah",
                "baje",
                "bajkar",
                "minute",
                "ko",
                "agle",
                "somvar",
                "10",
                "30",
                "10.30",
                "1030",
                "at",
                "half",
                "past",
                "is",
                "friday",
                "tarikh",
                "8",
                "december",
            ]
        ),  # fmt: skip
        max_size=8,
    )
)
def test_hinglish_normalise_is_idempotent_and_never_goes_back(tokens: list[str]) -> None:
    text = " ".join(tokens)
    assert normalise(normalise(text)) == normalise(text)
    when = parse_when(text, NOW)
    if when is not None:
        assert when.date >= NOW.date()
