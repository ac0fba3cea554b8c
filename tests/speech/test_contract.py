"""One contract for every recognizer and synthesizer: fakes, offline, cloud against fakes,
and the fallback wrappers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from dialgraph.telephony.audio import silence
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, word_audio
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake
from dialgraph.telephony.speech.base import (
    FRAME_BYTES,
    AudioChunk,
    Final,
    RecognitionEvent,
    SpeechRecognizer,
    SpeechStarted,
    SpeechSynthesizer,
)
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import ElevenLabsHttpSynthesizer, ElevenLabsSynthesizer
from dialgraph.telephony.speech.fallback import FallbackRecognizer, FallbackSynthesizer
from tests.fakes.speech import ToneSynthesizer, WordCodeRecognizer
from tests.speech.conftest import OFFLINE, VOCAB, needs_espeak, phrase_source, similarity

UTTERANCE = "i would like to book an appointment"
Case = tuple[SpeechRecognizer, bytes, float]  # recognizer, audio of UTTERANCE, minimum similarity

RECOGNIZERS = [
    "wordcode-fake",
    "deepgram-fake",
    "fallback-deepgram-refused",
    pytest.param("whisper", marks=pytest.mark.skipif(not OFFLINE, reason="offline extra missing")),
]
SYNTHESIZERS = [
    "tone-fake",
    "elevenlabs-ws-fake",
    "elevenlabs-http-fake",
    "fallback-elevenlabs-refused",
    pytest.param("piper", marks=pytest.mark.skipif(not OFFLINE, reason="offline extra missing")),
    pytest.param("espeak", marks=needs_espeak),
]


@pytest.fixture(params=RECOGNIZERS)
async def asr_case(request: pytest.FixtureRequest) -> AsyncIterator[Case]:
    name = request.param
    coded = word_audio(UTTERANCE.split(), VOCAB, tail_ms=700)
    async with contextlib.AsyncExitStack() as stack:
        if name == "wordcode-fake":
            yield WordCodeRecognizer(VOCAB), coded, 1.0
        elif name == "deepgram-fake":
            fake = await stack.enter_async_context(DeepgramFake(VOCAB))
            yield DeepgramRecognizer("dg-test-key", url=fake.url), coded, 1.0
        elif name == "fallback-deepgram-refused":
            fake = await stack.enter_async_context(DeepgramFake(VOCAB))
            fake.refuse = True
            primary = DeepgramRecognizer("dg-test-key", url=fake.url, max_reconnects=0)
            chain = FallbackRecognizer([primary, WordCodeRecognizer(VOCAB)])
            stack.push_async_callback(chain.aclose)
            yield chain, coded, 1.0
        else:
            from dialgraph.telephony.speech.offline_asr import WhisperRecognizer
            from dialgraph.telephony.speech.offline_tts import OfflineSynthesizer
            from dialgraph.telephony.speech.vad import SileroVad

            workers = request.getfixturevalue("workers")
            tts = OfflineSynthesizer(voice=request.getfixturevalue("piper_voice"), workers=workers, variation=False)
            speech = b"".join(
                [c.audio async for c in tts.synthesize(phrase_source(["I would like to book an appointment."]))]
            )
            model = request.getfixturevalue("whisper_model")
            yield (
                WhisperRecognizer(model, workers=workers, vad_factory=SileroVad),
                silence(400) + speech + silence(900),
                0.75,
            )


async def run_stream(recognizer: SpeechRecognizer, audio: bytes, *, end: bool = True) -> list[RecognitionEvent]:
    stream = recognizer.stream()
    try:
        for i in range(0, len(audio), FRAME_BYTES):  # pushed before anyone iterates: nothing may be lost
            stream.push(audio[i : i + FRAME_BYTES])
        if end:
            await stream.end_input()
        async with asyncio.timeout(30):  # a hang fails the test instead of blocking the run
            return [event async for event in stream]
    finally:
        await stream.aclose()


async def test_final_holds_the_words(asr_case: Case) -> None:
    recognizer, audio, minimum = asr_case
    events = await run_stream(recognizer, audio)
    finals = [e for e in events if isinstance(e, Final)]
    assert finals, events
    assert similarity(" ".join(f.text for f in finals), UTTERANCE) >= minimum, finals


async def test_speech_started_comes_first_and_times_are_ordered(asr_case: Case) -> None:
    recognizer, audio, _ = asr_case
    events = await run_stream(recognizer, audio)
    finals = [e for e in events if isinstance(e, Final)]
    if recognizer.capabilities.vad_events:
        first_final = events.index(finals[0])
        assert any(isinstance(e, SpeechStarted) for e in events[:first_final])
    for f in finals:
        assert 0 <= f.start <= f.end <= len(audio) / 8000 + 0.05
    assert [f.start for f in finals] == sorted(f.start for f in finals)


async def test_silence_gives_no_final(asr_case: Case) -> None:
    recognizer, _, _ = asr_case
    events = await run_stream(recognizer, silence(1000))
    assert not [e for e in events if isinstance(e, Final)]


async def test_aclose_ends_iteration_and_is_idempotent(asr_case: Case) -> None:
    recognizer, audio, _ = asr_case
    stream = recognizer.stream()
    stream.push(audio[: len(audio) // 3])
    seen: list[RecognitionEvent] = []

    async def consume() -> None:
        async for event in stream:
            seen.append(event)

    consumer_task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await stream.aclose()
    async with asyncio.timeout(10):
        await consumer_task
    await stream.aclose()
    stream.push(audio)  # after close: ignored, never raises


# --- synthesizers --------------------------------------------------------------------------
PHRASES = ["Hello there.", "How can I help you today?", "We open at 9 a.m. tomorrow."]


@pytest.fixture(params=SYNTHESIZERS)
async def synth(request: pytest.FixtureRequest) -> AsyncIterator[SpeechSynthesizer]:
    name = request.param
    async with contextlib.AsyncExitStack() as stack:
        if name == "tone-fake":
            yield ToneSynthesizer()
        elif name in ("elevenlabs-ws-fake", "elevenlabs-http-fake", "fallback-elevenlabs-refused"):
            fake = await stack.enter_async_context(ElevenLabsFake())
            if name == "elevenlabs-ws-fake":
                yield ElevenLabsSynthesizer("el-test-key", url=fake.url)
            elif name == "elevenlabs-http-fake":
                yield ElevenLabsHttpSynthesizer("el-test-key", url=fake.url)
            else:
                fake.refuse = True
                chain = FallbackSynthesizer([ElevenLabsSynthesizer("el-test-key", url=fake.url), ToneSynthesizer()])
                stack.push_async_callback(chain.aclose)
                yield chain
        elif name == "piper":
            from dialgraph.telephony.speech.offline_tts import OfflineSynthesizer

            yield OfflineSynthesizer(
                voice=request.getfixturevalue("piper_voice"), workers=request.getfixturevalue("workers")
            )
        else:
            from dialgraph.telephony.speech.offline_tts import OfflineSynthesizer

            yield OfflineSynthesizer(engine="espeak")


async def collect(chunks: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    async with asyncio.timeout(60):
        return [c async for c in chunks]


def check_phrases(chunks: list[AudioChunk], n: int) -> None:
    assert [c.phrase for c in chunks] == sorted(c.phrase for c in chunks), "phrases out of order"
    assert {c.phrase for c in chunks} == set(range(n))
    for i in range(n):
        mine = [c for c in chunks if c.phrase == i]
        assert [c.last for c in mine] == [False] * (len(mine) - 1) + [True], f"phrase {i}: one last chunk, at the end"
        assert sum(len(c.audio) for c in mine) > 400, f"phrase {i} has (almost) no audio"


async def test_every_phrase_in_order(synth: SpeechSynthesizer) -> None:
    chunks = await collect(synth.synthesize(phrase_source(PHRASES)))
    check_phrases(chunks, len(PHRASES))


async def test_first_audio_before_the_reply_is_complete(synth: SpeechSynthesizer) -> None:
    first_audio = asyncio.Event()

    async def slow_source() -> AsyncIterator[str]:
        yield PHRASES[0]
        await first_audio.wait()  # the LLM is still "thinking": phrase 1 must already play
        yield PHRASES[1]

    chunks = []
    async with asyncio.timeout(60):
        async for chunk in synth.synthesize(slow_source()):
            chunks.append(chunk)
            first_audio.set()
    check_phrases(chunks, 2)


async def test_closing_mid_reply_stops_and_the_synth_stays_usable(synth: SpeechSynthesizer) -> None:
    pulled: list[str] = []

    async def source() -> AsyncIterator[str]:
        for p in PHRASES * 5:
            pulled.append(p)
            yield p

    it = synth.synthesize(source())
    first = await anext(it)
    assert first.phrase == 0
    await it.aclose()  # type: ignore[attr-defined]  # barge-in
    assert len(pulled) < len(PHRASES) * 5
    check_phrases(await collect(synth.synthesize(phrase_source(PHRASES[:1]))), 1)


async def test_no_phrases_no_audio(synth: SpeechSynthesizer) -> None:
    assert await collect(synth.synthesize(phrase_source([]))) == []


async def test_cancelling_the_consumer_task_releases_everything(synth: SpeechSynthesizer) -> None:
    got_audio = asyncio.Event()

    async def consume(factory: Callable[[], Any]) -> None:
        async for _chunk in factory():
            got_audio.set()

    consumer_task = asyncio.create_task(consume(lambda: synth.synthesize(phrase_source(PHRASES * 3))))
    async with asyncio.timeout(60):
        await got_audio.wait()
    consumer_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer_task
