"""Hinglish (romanised Hindi as ASR writes it, mixed with English) in the offline model's
understanding: intents, yes/no, names, days, picks; and Hindi words that are also English
("do", "se", "na", "main", "is", "sham") do not leak into English turns."""

from __future__ import annotations

import datetime as dt

import pytest

from dialgraph.graphs.intents import classify, extract_name, is_no, is_yes, pick_ordinal
from dialgraph.graphs.spoken_time import normalise, parse_when

NOW = dt.datetime(2026, 12, 2, 8, 0)  # a Wednesday
TARGETS = {"billing": "billing team", "manager": "the practice manager"}

INTENTS: list[tuple[str, str | None]] = [
    # book
    ("appointment book karna hai", "book"),
    ("mujhe appointment chahiye", "book"),
    ("kal subah 10 baje ka appointment chahiye", "book"),
    ("Mujhe Thursday ko 11 baje appointment chahiye", "book"),
    ("milna hai doctor se", "book"),
    ("doctor se milna hai", "book"),
    ("doctor ko dikhana hai", "book"),
    ("checkup karwana hai", "book"),
    ("kal ke liye slot chahiye", "book"),
    ("I want to book an appointment for tomorrow", "book"),
    # cancel
    ("cancel kar do", "cancel"),
    ("mera appointment cancel karna hai", "cancel"),
    ("radd kar do", "cancel"),
    ("appointment radd karna hai", "cancel"),
    # reschedule
    ("time badalna hai", "reschedule"),
    ("appointment change karna hai", "reschedule"),
    ("mera appointment badal dijiye", "reschedule"),
    ("appointment aage kar do", "reschedule"),
    ("dusra time chahiye", "reschedule"),
    ("prepone my appointment", "reschedule"),
    ("postpone my appointment please", "reschedule"),
    # human
    ("kisi insaan se baat karao", "human"),
    ("kisi se baat karni hai", "human"),
    ("manager se baat karwao", "human"),
    ("billing team se baat karni hai", "human"),
    ("koi asli insaan hai?", "human"),
    ("mujhe transfer kar do", "human"),
    # message
    ("message chhod do", "message"),
    ("unke liye message de dena", "message"),
    ("ek message dena tha", "message"),
    ("Billing ke liye ek message hai", "message"),
    ("doctor ko bata dena ki main late hoon", "message"),
    # bye
    ("bas itna hi", "bye"),
    ("bas itna hi, dhanyavaad", "bye"),
    ("dhanyavaad, bye", "bye"),
    ("aur kuch nahi", "bye"),
    ("theek hai, alvida", "bye"),
    # questions
    ("aap kab khulte ho", "question"),
    ("fees kitni hai", "question"),
    ("clinic kahan hai", "question"),
    ("kya aap Sunday ko khule hain?", "question"),
    ("parking kaise milegi", "question"),
    # list
    ("mera appointment kab hai", "list"),
    ("meri booking kab hai", "list"),
    ("kab hai mera appointment", "list"),
    # outbound words keep their meaning
    ("mujhe call mat karo", "opt_out"),
    ("interest nahi hai", "not_interested"),
    ("nahi chahiye, dhanyavaad", "not_interested"),
    # a choice is not a refusal
    ("Friday nahi chahiye, Monday chahiye", None),
    # Hindi in Devanagari reads the same
    ("अपॉइंटमेंट कैंसल कर दो", "cancel"),
    ("मेरा अपॉइंटमेंट कब है?", "list"),
    ("हाँ जी", "yes"),
    ("जी नहीं", "no"),
    # yes / no through classify
    ("haan ji", "yes"),
    ("ji nahi", "no"),
    ("kyun nahi", "yes"),
]


@pytest.mark.parametrize(("said", "intent"), INTENTS)
def test_hinglish_intents(said: str, intent: str | None) -> None:
    assert classify(normalise(said), "scheduling", TARGETS) == intent, (said, normalise(said))


YES = ["haan", "haan ji", "ha ji", "haanji", "ji", "ji haan", "theek hai", "thik hai", "Theek hai.", "bilkul",
       "zaroor", "chalega", "sahi hai", "haan haan, theek hai", "achha theek hai", "kar do", "ok ji"]  # fmt: skip
NO = ["nahi", "nahin", "ji nahi", "nahi ji", "nahi chahiye", "mat karo", "nahi nahi", "na", "rehne do",
      "bilkul nahi"]  # fmt: skip


@pytest.mark.parametrize("said", YES)
def test_yes(said: str) -> None:
    norm = normalise(said)
    assert is_yes(norm) and not is_no(norm), said


@pytest.mark.parametrize("said", NO)
def test_no(said: str) -> None:
    norm = normalise(said)
    assert is_no(norm) and not is_yes(norm), said


NAMES: list[tuple[str, bool, str | None]] = [
    ("mera naam Priya Sharma hai", False, "Priya Sharma"),
    ("Mera naam hai Anil Kumar", False, "Anil Kumar"),
    ("haan ji, mera naam Priya hai aur kal appointment chahiye", False, "Priya"),
    ("main Rahul bol raha hoon", False, "Rahul"),
    ("haan ji main Priya Sharma bol rahi hoon", False, "Priya Sharma"),
    ("Rahul here", False, "Rahul"),
    ("Hello, Bob Stone here", False, "Bob Stone"),
    ("Ana speaking.", False, "Ana"),
    ("my name is Ana Lopez and I'd like to book", False, "Ana Lopez"),
    # a bare name when we asked for one
    ("Priya Sharma", True, "Priya Sharma"),
    ("Priya Sharma hai", True, "Priya Sharma"),
    ("haan ji, Rahul", True, "Rahul"),
    ("ji, Sharma ji", True, "Sharma"),
    ("Sharma jee", True, "Sharma"),
    ("Diya", True, "Diya"),  # Hindi words that are also names stay names
    ("Kara Smith", True, "Kara Smith"),
    ("mera naam Rahi hai", False, "Rahi"),
    # not names, even when asked
    ("Priya Sharma", False, None),
    ("kal subah", True, None),
    ("Thursday ko", True, None),
    ("radd kar do", True, None),
    ("time badalna hai", True, None),
    ("main theek hoon", True, None),
    ("main aa raha hoon", False, None),
    ("Nobody here", False, None),
    ("Monday at eleven", True, None),
    ("postpone my appointment", True, None),
]


@pytest.mark.parametrize(("said", "expecting", "name"), NAMES)
def test_names(said: str, expecting: bool, name: str | None) -> None:
    assert extract_name(said, expecting=expecting) == name


DAYS: list[tuple[str, str]] = [
    ("aaj", "2026-12-02"),
    ("kal", "2026-12-03"),  # booking: tomorrow, not yesterday
    ("parson", "2026-12-04"),
    ("somwar ko", "2026-12-07"),
    ("mangalvar", "2026-12-08"),
    ("budhwar ko", "2026-12-09"),
    ("guruvar", "2026-12-03"),
    ("veervar", "2026-12-03"),
    ("shukravar ko", "2026-12-04"),
    ("shaniwar", "2026-12-05"),
    ("itvaar ko", "2026-12-06"),
    ("Thursday ko", "2026-12-03"),
    ("agle Monday", "2026-12-07"),
    ("is Friday ko", "2026-12-04"),
    ("next Friday ko", "2026-12-04"),
    ("8 December ko", "2026-12-08"),
    ("agle hafte", "2026-12-07"),
    ("mangal ko", "2026-12-08"),
]


@pytest.mark.parametrize(("said", "day"), DAYS)
def test_days(said: str, day: str) -> None:
    when = parse_when(said, NOW)
    assert when is not None and when.time is None and when.date.isoformat() == day, (said, normalise(said))


@pytest.mark.parametrize(
    ("said", "index"),
    [("pehla wala", 0), ("doosra wala", 1), ("dusra wala", 1), ("teesra wala", 2), ("tisra", 2),
     ("aakhri wala", 2), ("last wala", 2), ("pehle wala time", 0), ("dusra time chahiye", None)],
)  # fmt: skip
def test_hinglish_picks_among_three(said: str, index: int | None) -> None:
    assert pick_ordinal(normalise(said), 3) == index


ENGLISH_UNCHANGED: list[tuple[str, str | None]] = [
    ("do you have anything tomorrow", "question"),
    ("what do I do now", "question"),
    ("I'd like to book, do you take walk ins", "book"),
    ("no, that's all", "bye"),
    ("na", "no"),
    ("is Friday ok?", None),
    ("the main reason is my tooth", None),
    ("it's a sham", None),
    ("talk to you soon", None),
]


@pytest.mark.parametrize(("said", "intent"), ENGLISH_UNCHANGED)
def test_hindi_words_that_are_english_do_not_leak(said: str, intent: str | None) -> None:
    assert classify(normalise(said), "scheduling") == intent, (said, normalise(said))


def test_english_words_stay_english_in_dates_and_times() -> None:
    assert normalise("do you have anything at two") == "do you have anything at 2"
    assert normalise("it's a sham") == "it's a sham"  # "sham" is evening only in a Hinglish turn
    assert normalise("sham ko 6 baje") == "evening ko 6:00"
    assert normalise("subah do") == "morning do"  # "do" is a number only before "baje" or after "saade"/"sawa"/"paune"
    assert normalise("do baje") == "2:00" and normalise("paune do") == "1:45"
    friday = parse_when("is Friday ok", NOW)  # English: the coming Friday, as before
    assert friday is not None and friday.date == dt.date(2026, 12, 4)
    assert parse_when("what do I do", NOW) is None
    assert parse_when("good morning, I'd like to book", NOW) is None  # a greeting names no time
