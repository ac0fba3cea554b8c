"""The flow languages and which one a caller's turn is in (server/core/language.py)."""

from __future__ import annotations

import pytest

from dialgraph.server.core.language import (
    LANGUAGES,
    deepgram_language,
    detect,
    elevenlabs_language,
    reply_language,
    twilio_say_language,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kal subah 10 baje ka appointment chahiye", "hi-en"),
        ("Mujhe Thursday ko 11 baje appointment chahiye", "hi-en"),
        ("mera naam Rahul hai", "hi-en"),
        ("haan", "hi-en"),
        ("ok theek hai", "hi-en"),
        ("cancel kar do", "hi-en"),
        ("मुझे कल का अपॉइंटमेंट चाहिए", "hi"),
        ("I'd like to book an appointment for Thursday", "en"),
        ("The appointment is at the clinic, are you open?", "en"),
        ("Do you have anything at 10 to 11?", "en"),
        ("Yes please", "en"),
        ("hmm", "en"),
        ("", "en"),
    ],
)
def test_detect(text: str, expected: str) -> None:
    assert detect(text) == expected


def test_one_hindi_word_in_a_long_english_sentence_is_still_english() -> None:
    assert detect("I would like to book a cleaning for my daughter next week please ji") == "en"


@pytest.mark.parametrize(
    ("flow", "caller", "expected"),
    [
        ("en", "hi-en", "en"),
        ("en", None, "en"),
        ("hi", "en", "hi"),
        ("hi-en", None, "hi-en"),
        ("hi-en", "hi-en", "hi-en"),
        ("hi-en", "en", "en"),  # the caller switched to English: follow them
        ("hi-en", "hi", "hi-en"),
        ("en-IN", None, "en"),
        ("en-IN", "hi-en", "hi-en"),
        ("en-IN", "en", "en"),
    ],
)
def test_reply_follows_the_caller_where_the_flow_allows(flow: str, caller: str | None, expected: str) -> None:
    assert reply_language(flow, caller) == expected  # type: ignore[arg-type]


def test_vendor_names() -> None:
    assert LANGUAGES == ("en", "en-IN", "hi", "hi-en")
    assert [deepgram_language(x) for x in LANGUAGES] == ["en", "en-IN", "hi", "multi"]
    assert [elevenlabs_language(x) for x in LANGUAGES] == [None, None, "hi", "hi"]
    assert [twilio_say_language(x) for x in LANGUAGES] == ["en-US", "en-IN", "hi-IN", "hi-IN"]


def test_the_readmes_hinglish_example_config_loads() -> None:
    from pathlib import Path

    from dialgraph.server.core.settings import Settings

    config = Path(__file__).resolve().parents[2] / "docs" / "hinglish.toml"
    flow = Settings(config_file=config).flows["clinic"]  # type: ignore[call-arg]
    assert (flow.language, flow.timezone, flow.graph) == ("hi-en", "Asia/Kolkata", "scheduling")
    assert "Sharma Dental Clinic" in flow.keyterms
