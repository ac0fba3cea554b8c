"""PII redaction (server/core/redaction.py): property tests over every checksum-valid card
and Aadhaar number in any grouping and spoken form, the false-positive rate on numbers that
fail the checksums (printed: run with -s), idempotence, and one example per category."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialgraph.server.core.redaction import (
    CATEGORIES,
    RedactionSettings,
    Redactor,
    default_redactor,
    luhn_check_digit,
    luhn_valid,
    verhoeff_check_digit,
    verhoeff_valid,
)

R = default_redactor()
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Words around a number that say nothing about what it is (no "card", no "code").
NEUTRAL_BEFORE = ["", "it's ", "ok so it is ", "the number is ", "right, ", "yes: "]
NEUTRAL_AFTER = ["", " thanks", ". Is that all?", " and that's it", ", got it?"]
SEPARATORS = [" ", "-", ".", "  ", ", ", " - "]
WORDS = {
    "0": ["zero", "oh", "o", "shunya"],
    "1": ["one", "ek"],
    "2": ["two"],
    "3": ["three", "teen"],
    "4": ["four", "chaar"],
    "5": ["five", "paanch"],
    "6": ["six", "chhe"],
    "7": ["seven", "saat"],
    "8": ["eight", "aath"],
    "9": ["nine", "nau"],
}


def digits_of(n: int, first: str = "0123456789") -> st.SearchStrategy[str]:
    return st.builds(
        lambda a, rest: a + "".join(rest),
        st.sampled_from(first),
        st.lists(st.sampled_from("0123456789"), min_size=n - 1, max_size=n - 1),
    )


cards = st.integers(13, 19).flatmap(lambda n: digits_of(n - 1)).map(lambda d: d + luhn_check_digit(d))
aadhaars = digits_of(11, "23456789").map(lambda d: d + verhoeff_check_digit(d))


@st.composite
def grouped(draw: st.DrawFn, number: str) -> str:
    """``number`` cut into random groups joined by random separators (or none)."""
    out, i = [], 0
    while i < len(number):
        size = draw(st.integers(1, len(number) - i))
        out.append(number[i : i + size])
        i += size
    sep = draw(st.sampled_from([*SEPARATORS, "mixed"]))
    if sep == "mixed":
        return "".join(g + (draw(st.sampled_from(SEPARATORS)) if k < len(out) - 1 else "") for k, g in enumerate(out))
    return sep.join(out)


@st.composite
def spoken(draw: st.DrawFn, number: str) -> str:
    """``number`` said digit by digit, with "double"/"triple" for repeats now and then."""
    words, i = [], 0
    while i < len(number):
        d = number[i]
        same = len(number[i:]) - len(number[i:].lstrip(d))
        times = draw(st.sampled_from([1, min(same, 2), min(same, 3)]))
        word = draw(st.sampled_from(WORDS[d]))
        words.append(word if times == 1 else f"{'double' if times == 2 else 'triple'} {word}")
        i += times
    return draw(st.sampled_from([" ", ", ", " - "])).join(words)


def say(draw: st.DrawFn, number_text: str) -> tuple[str, str, str]:
    return draw(st.sampled_from(NEUTRAL_BEFORE)), number_text, draw(st.sampled_from(NEUTRAL_AFTER))


# --- cards and Aadhaar: every checksum-valid number, however it is written or said -------------
@FAST
@given(st.data())
def test_every_luhn_valid_card_is_redacted_in_any_grouping(data: st.DataObject) -> None:
    card = data.draw(cards)
    before, said, after = say(data.draw, data.draw(grouped(card)))
    out = R.redact(before + said + after)
    assert out == f"{before}[card ending {card[-4:]}]{after}"


@FAST
@given(st.data())
def test_every_luhn_valid_card_is_redacted_when_spoken(data: st.DataObject) -> None:
    card = data.draw(cards)
    before, said, after = say(data.draw, data.draw(spoken(card)))
    out = R.redact(before + said + after)
    assert out == f"{before}[card ending {card[-4:]}]{after}", said


@FAST
@given(st.data())
def test_every_verhoeff_valid_aadhaar_is_redacted_in_any_grouping(data: st.DataObject) -> None:
    number = data.draw(aadhaars)
    before, said, after = say(data.draw, data.draw(grouped(number)))
    assert R.redact(before + said + after) == f"{before}[Aadhaar ending {number[-4:]}]{after}"


@FAST
@given(st.data())
def test_every_verhoeff_valid_aadhaar_is_redacted_when_spoken(data: st.DataObject) -> None:
    number = data.draw(aadhaars)
    before, said, after = say(data.draw, data.draw(spoken(number)))
    assert R.redact(before + said + after) == f"{before}[Aadhaar ending {number[-4:]}]{after}", said


def test_checksums() -> None:
    assert luhn_valid("4242424242424242") and not luhn_valid("4242424242424241")
    assert verhoeff_valid("2363") and not verhoeff_valid("2364")  # the textbook example: 236 -> 3
    assert verhoeff_check_digit("236") == "3" and luhn_check_digit("424242424242424") == "2"


# --- numbers that fail the checksums mostly pass through ----------------------------------------
def _random_number(rng: random.Random, *, fail_checksums: bool) -> str:
    while True:
        n = rng.randint(6, 19)
        number = "".join(rng.choice("0123456789") for _ in range(n))
        if not fail_checksums:
            return number
        if (13 <= n <= 19 and luhn_valid(number)) or (n == 12 and verhoeff_valid(number)):
            continue
        return number


def _grouped(rng: random.Random, number: str) -> str:
    if rng.random() < 0.4:
        return number
    groups, i = [], 0
    while i < len(number):
        size = rng.randint(1, 5)
        groups.append(number[i : i + size])
        i += size
    return rng.choice(SEPARATORS).join(groups)


def _rate(rng: random.Random, *, fail_checksums: bool, samples: int = 3000) -> float:
    changed = 0
    for _ in range(samples):
        text = rng.choice(NEUTRAL_BEFORE) + _grouped(rng, _random_number(rng, fail_checksums=fail_checksums))
        text += rng.choice(NEUTRAL_AFTER)
        changed += R.redact(text) != text
    return changed / samples


def test_false_positive_rate_on_numbers_failing_the_checksums() -> None:
    rng = random.Random(13)
    failing = _rate(rng, fail_checksums=True)
    anything = _rate(rng, fail_checksums=False)
    print(
        f"\nredaction false positives, random 6-19 digit numbers in random groupings, no keyword: "
        f"{failing:.2%} of those failing Luhn/Verhoeff; {anything:.2%} of all (a random 13-19 digit "
        "string is Luhn-valid 1 time in 10, a 12-digit one Verhoeff-valid 1 in 10: those are redacted)"
    )
    assert failing < 0.02  # only SSN-shaped 3-2-4 groups of valid ranges
    assert anything < 0.12


def test_phone_numbers_pass_through() -> None:
    for text in ["call me on +91 98765 43210", "my number is 98765 43210", "+1 415 555 0100", "+919876543210"]:
        assert R.redact(text) == text


# --- idempotence --------------------------------------------------------------------------------
FRAGMENTS = st.one_of(
    st.sampled_from(
        [
            "card",
            "my card is",
            "Aadhaar",
            "OTP is",
            "code",
            "cvv",
            "expires",
            "account",
            "IFSC SBIN0001234",
            "SSN",
            "oh",
            "double",
            "triple",
            "and",
            "o",
            "do",
            "[card ending 1234]",
            "[OTP]",
            "[email]",
            "jane at example dot com",
            "x@y.co",
            "ABCDE1234F",
            "a b c d e one two three four f",
            "04/27",
            "123-45-6789",
            "thanks",
            ",",
            "-",
            ".",
            "+",
        ]
    ),
    cards,
    aadhaars,
    st.text("0123456789", min_size=1, max_size=22),
    st.sampled_from([w for ws in WORDS.values() for w in ws]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(FRAGMENTS, max_size=14), st.lists(st.sampled_from([" ", "", ", ", "-", " and "]), min_size=14))
def test_redaction_is_idempotent(parts: list[str], seps: list[str]) -> None:
    text = "".join(p + s for p, s in zip(parts, seps, strict=False))
    once = R.redact(text)
    assert R.redact(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789 -.,/@[]abcdeotwnCARDOTP", max_size=80))
def test_redaction_is_idempotent_on_noise(text: str) -> None:
    once = R.redact(text)
    assert R.redact(once) == once


# --- one example per category -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("card 4242 4242 4242 4242 expires 04/27 cvv 123", "card [card ending 4242] expires [expiry] cvv [CVV]"),
        ("it's 4111-1111-1111-1111 0427 321", "it's [card ending 1111] [expiry] [CVV]"),
        ("my credit card is 4242 4242 4242 4241", "my credit card is [card ending 4241]"),  # misheard: card said
        ("expiry zero four two seven", "expiry [expiry]"),
        ("the security code is 1234", "the security code is [CVV]"),
        ("my aadhaar is 2345 6789 0123", "my aadhaar is [Aadhaar ending 0123]"),  # said: no checksum needed
        ("PAN is ABCDE1234F", "PAN is [PAN]"),
        ("pan abcde1234f", "pan [PAN]"),
        ("it's A B C D E one two three four F", "it's [PAN]"),
        ("account 12345678901 IFSC SBIN0001234", "account [bank account ending 8901] IFSC SBIN0001234"),
        ("send it to 001234567890123, ifsc HDFC0000123", "send it to [bank account ending 0123], ifsc HDFC0000123"),
        ("the OTP is 482913", "the OTP is [OTP]"),
        ("my one time password is four eight two nine", "my one time password is [OTP]"),
        ("verification code 5521", "verification code [OTP]"),
        ("the code that I got is double four seven seven", "the code that I got is [OTP]"),
        ("SSN 123-45-6789", "SSN [SSN]"),
        ("it's 123 45 6789", "it's [SSN]"),
        (
            "my social security number is one two three four five six seven eight nine",
            "my social security number is [SSN]",
        ),
        ("mail jane.doe+x@example.co.in please", "mail [email] please"),
        ("it's jane dot doe at gmail dot com", "it's [email]"),
        ("jane at example.com", "[email]"),
    ],
)
def test_examples(text: str, redacted: str) -> None:
    assert R.redact(text) == redacted
    assert R.redact(redacted) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "I have one question and two problems",
        "I'll be there at four, oh and bring two chairs",
        "the meeting is at 10:30 on 04/05",  # no expiry keyword, no card
        "order 12345 shipped",
        "SSN 000-12-3456 and 666-12-3456 and 912-34-5678 and 123-00-4567 and 123-45-0000",  # invalid SSNs
        "room 101, ext 4242",
        "the code is in the email",
        "meet at home",
        "version 3.12.1",
    ],
)
def test_ordinary_speech_passes(text: str) -> None:
    assert R.redact(text) == text


@pytest.mark.parametrize(
    ("category", "text"),
    [
        ("card", "it's 4242 4242 4242 4242"),
        ("aadhaar", "it's " + "23456789012" + verhoeff_check_digit("23456789012")),
        ("pan", "PAN ABCDE1234F"),
        ("bank_account", "account 12345678901 IFSC SBIN0001234"),
        ("otp", "the OTP is 482913"),
        ("ssn", "SSN 123-45-6789"),
        ("email", "jane@example.com"),
        ("expiry", "expires 04/27"),
        ("cvv", "cvv 123"),
    ],
)
def test_a_category_switched_off_passes_through(category: str, text: str) -> None:
    assert R.redact(text) != text
    off = Redactor(RedactionSettings(**{category: False}))
    assert off.redact(text) == text
    assert Redactor(RedactionSettings(**dict.fromkeys(CATEGORIES, False))).redact(text) == text


def test_findings_map_onto_the_original_text() -> None:
    text = "so it's four two four two, four two four two, four two four two, four two four two. Thanks"
    (finding,) = R.findings(text)
    assert finding.category == "card"
    assert text[finding.start : finding.end].startswith("four") and text[finding.end :] == ". Thanks"


@pytest.mark.parametrize(
    ("keys", "context", "stored"),
    [
        ("1", None, "1"),
        ("0#", None, "0#"),
        ("4242424242424242", None, "[card ending 4242]"),
        ("4829", "please enter the OTP", "[4 digits]"),
        ("1", "enter your card number", "[1 digits]"),
        ("123456", None, "[6 digits]"),
    ],
)
def test_dtmf_digits(keys: str, context: str | None, stored: str) -> None:
    assert R.redact_digits(keys, context=context) == stored


def test_a_thirty_word_turn_costs_microseconds() -> None:
    """Not a timing assert (bench figures come from timeit): the turn is redacted right."""
    turn = (
        "yes hi so I wanted to pay the bill with my visa card it is four two four two four two four two "
        "four two four two four two four two thanks"
    )
    assert re.search(r"\[card ending 4242\] thanks$", R.redact(turn))
