"""The offline stack: round trip (piper -> 8 kHz mu-law -> silero + whisper), VAD, model checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialgraph.telephony.audio import silence
from dialgraph.telephony.speech.base import FRAME_BYTES, Final, Interim, SpeechStarted
from dialgraph.telephony.speech.offline_tts import parse_wav
from dialgraph.telephony.speech.workers import ModelIntegrityError, SpeechWorkers, verify_model_files
from tests.speech.conftest import needs_offline, phrase_source, similarity, words_of

ROUND_TRIP = [
    "I would like to book an appointment for next Tuesday.",
    "Can you tell me your opening hours on Saturday?",
    "Please transfer me to the billing team.",
    "Cancel my Friday visit, please, something came up.",
]


@pytest.mark.slow
@needs_offline
async def test_round_trip_piper_to_whisper(piper_voice: Any, whisper_model: Any, workers: SpeechWorkers) -> None:
    from dialgraph.telephony.speech.offline_asr import WhisperRecognizer
    from dialgraph.telephony.speech.offline_tts import OfflineSynthesizer
    from dialgraph.telephony.speech.vad import SileroVad

    tts = OfflineSynthesizer(voice=piper_voice, workers=workers, variation=False)
    chunks = [c async for c in tts.synthesize(phrase_source(ROUND_TRIP))]
    audio = silence(300)
    for i in range(len(ROUND_TRIP)):  # one caller turn per phrase, a second of silence between
        audio += b"".join(c.audio for c in chunks if c.phrase == i) + silence(1000)
    stream = WhisperRecognizer(model=whisper_model, workers=workers, vad_factory=SileroVad).stream()
    for i in range(0, len(audio), FRAME_BYTES):
        stream.push(audio[i : i + FRAME_BYTES])
    await stream.end_input()
    async with asyncio.timeout(120):
        events = [e async for e in stream]
    finals = [e for e in events if isinstance(e, Final)]
    assert len(finals) == len(ROUND_TRIP), finals
    assert sum(isinstance(e, SpeechStarted) for e in events) == len(ROUND_TRIP)
    for said, heard in zip(ROUND_TRIP, finals, strict=True):
        assert similarity(said, heard.text) >= 0.7, (said, heard.text)
        assert heard.speech_final


@needs_offline
def test_silero_tells_speech_from_silence_and_noise(piper_voice: Any) -> None:
    import numpy as np

    from dialgraph.telephony.audio import audioop
    from dialgraph.telephony.speech.offline_tts import render_piper
    from dialgraph.telephony.speech.vad import SileroVad, WebRtcVad

    speech = render_piper(piper_voice, "Hello, I would like to speak to someone about my bill.", variation=False)
    rng = np.random.default_rng(1)
    noise = audioop.lin2ulaw((rng.normal(0, 300, 8000)).astype("<i2").tobytes(), 2)
    vad = SileroVad()

    def probs(audio: bytes) -> list[float]:
        return [
            vad.speech_probability(audio[i : i + FRAME_BYTES])
            for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES)
        ]

    assert max(probs(silence(1000))) == 0.0  # gated: the model never ran
    assert sum(p > 0.5 for p in probs(noise)) < 5
    vad.reset()
    voiced = probs(speech)
    assert sum(p > 0.5 for p in voiced) > len(voiced) / 2
    web = WebRtcVad()
    assert web.speech_probability(speech[4000:4160]) in (0.0, 1.0)


def test_model_hash_mismatch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not the model")
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        verify_model_files(tmp_path, {"model.bin": "0" * 64})
    with pytest.raises(ModelIntegrityError, match="missing"):
        verify_model_files(tmp_path, {"other.bin": "0" * 64})


def test_parse_wav_reads_espeaks_streaming_header() -> None:
    import struct

    body = struct.pack("<4h", 0, 16384, -16384, 0)
    fmt = struct.pack("<HHIIHH", 1, 1, 22050, 44100, 2, 16)
    wav = (
        b"RIFF"
        + b"\xff\xff\xff\xff"
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + b"\xff\xff\xff\xff"
        + body
    )
    samples, rate = parse_wav(wav)
    assert rate == 22050 and list(samples) == [0.0, 0.5, -0.5, 0.0]


# --- latency work: speculative decoding, short encoder window, split first phrase ----------
class CountingWorkers(SpeechWorkers):
    """The real pool, counting the jobs it is given."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.jobs = 0

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.jobs += 1
        return await super().run(fn, *args, **kwargs)


async def _settle(pool: SpeechWorkers) -> None:
    """Let the event loop start any decode, then wait until the pool is idle."""
    await asyncio.sleep(0)
    async with asyncio.timeout(30):
        while pool.pending:
            await asyncio.sleep(0.01)


def _trim_tail(audio: bytes) -> bytes:
    """Drop piper's trailing near-silence (~200 ms), so a test controls the pause exactly."""
    from dialgraph.telephony.audio import audioop

    end = len(audio) - len(audio) % FRAME_BYTES
    while end > FRAME_BYTES and audioop.rms(audioop.ulaw2lin(audio[end - FRAME_BYTES : end], 2), 2) < 100:
        end -= FRAME_BYTES
    return audio[:end]


def _push(stream: Any, audio: bytes) -> None:
    for i in range(0, len(audio), FRAME_BYTES):
        stream.push(audio[i : i + FRAME_BYTES])


@pytest.mark.slow
@needs_offline
async def test_speculative_decode_is_the_final_or_is_dropped(piper_voice: Any, whisper_model: Any) -> None:
    from dialgraph.telephony.speech.base import UtteranceEnd
    from dialgraph.telephony.speech.offline_asr import WhisperRecognizer
    from dialgraph.telephony.speech.offline_tts import render_piper
    from dialgraph.telephony.speech.vad import SileroVad

    first = "I would like to book an appointment"
    second = "for next Tuesday afternoon please."
    a, b = (
        _trim_tail(render_piper(piper_voice, first + ".", variation=False)),
        render_piper(piper_voice, second, variation=False),
    )
    pool = CountingWorkers(1)
    try:
        asr = WhisperRecognizer(
            whisper_model, workers=pool, vad_factory=SileroVad, endpointing_ms=600, speculate_ms=160
        )
        # The caller pauses past the speculation point, the guess finishes, then speech resumes:
        # the guess (first half only) must be dropped and the Final must hold every word.
        stream = asr.stream()
        _push(stream, silence(300) + a + silence(350))
        await _settle(pool)
        assert pool.jobs == 1  # the guess ran
        _push(stream, b + silence(700))
        await stream.end_input()
        async with asyncio.timeout(60):
            events = [e async for e in stream]
        await stream.aclose()
        finals = [e for e in events if isinstance(e, Final)]
        assert len(finals) == 1, finals
        assert similarity(f"{first} {second}", finals[0].text) >= 0.8, finals[0].text
        assert pool.jobs == 2  # the dropped guess, and one decode of the whole turn

        # Silence runs on to the endpoint: the finished guess is the Final, no second decode.
        stream = asr.stream()
        _push(stream, silence(300) + b + silence(300))
        await _settle(pool)
        jobs = pool.jobs
        _push(stream, silence(400))
        async with asyncio.timeout(60):
            events = []
            async for event in stream:
                events.append(event)
                if isinstance(event, UtteranceEnd):
                    break
        await stream.aclose()
        assert pool.jobs == jobs
        finals = [e for e in events if isinstance(e, Final)]
        assert len(finals) == 1 and similarity(second, finals[0].text) >= 0.8, finals
        # the guess came out at the pause, before the endpoint, as the stable text of the turn
        stable = [e for e in events if isinstance(e, Interim) and e.stable]
        assert [e.text for e in stable] == [finals[0].text]
        assert events.index(stable[0]) < events.index(finals[0])
    finally:
        pool.shutdown()


@pytest.mark.slow
@needs_offline
def test_short_window_decodes_long_turns_without_repeating(piper_voice: Any, whisper_model: Any) -> None:
    from dialgraph.telephony.speech.offline_asr import decode_segment
    from dialgraph.telephony.speech.offline_tts import render_piper

    turn = " ".join(ROUND_TRIP[:3])  # ~8 s: the 20 s window
    audio = b"".join(render_piper(piper_voice, p, variation=False) + silence(250) for p in ROUND_TRIP[:3])
    text, confidence = decode_segment(whisper_model, silence(200) + audio, short_window=True)
    assert similarity(turn, text) >= 0.85, text
    assert len(words_of(text)) <= len(words_of(turn)) + 3, text
    assert confidence is not None and 0 < confidence <= 1


def test_split_head_cuts_at_an_early_clause_only() -> None:
    from dialgraph.telephony.speech.offline_tts import split_head

    assert split_head("Sure, I have booked you in for Tuesday.") == ["Sure,", "I have booked you in for Tuesday."]
    assert split_head("Okay. What day suits you best?") == ["Okay.", "What day suits you best?"]
    for whole in (
        "Hello there.",  # no tail worth a split
        "Dr. Miller can see you at ten.",
        "We open at 9 a.m. Tuesday and close at five.",
        "That is 1,500 dollars for the whole treatment.",
        "I would like to book an appointment for next Tuesday, please.",  # boundary too late
    ):
        assert split_head(whole) == [whole]


@given(
    st.lists(
        st.sampled_from(["Sure,", "ok.", "Dr.", "1,000", "2.5", "Then", "a.m.", "-", "yes;", "we", "Go!"]), max_size=14
    )
)
def test_split_head_keeps_every_word(tokens: list[str]) -> None:
    from dialgraph.telephony.speech.offline_tts import split_head

    text = " ".join(tokens)
    pieces = split_head(text)
    assert 1 <= len(pieces) <= 2
    assert [w for p in pieces for w in p.split()] == text.split()


@pytest.mark.slow
@needs_offline
async def test_split_first_phrase_plays_whole(piper_voice: Any, whisper_model: Any, workers: SpeechWorkers) -> None:
    from dialgraph.telephony.speech.offline_asr import decode_segment
    from dialgraph.telephony.speech.offline_tts import OfflineSynthesizer

    phrases = ["Sure, I have booked you in for Tuesday morning.", "Anything else?"]
    chunks = [
        c
        async for c in OfflineSynthesizer(voice=piper_voice, workers=workers, variation=False).synthesize(
            phrase_source(phrases)
        )
    ]
    assert [c.phrase for c in chunks] == sorted(c.phrase for c in chunks)
    for i, said in enumerate(phrases):
        mine = [c for c in chunks if c.phrase == i]
        assert [c.last for c in mine] == [False] * (len(mine) - 1) + [True]
        text, _ = decode_segment(whisper_model, silence(200) + b"".join(c.audio for c in mine) + silence(300))
        assert similarity(said, text) >= 0.7, (said, text)


@needs_offline
def test_piper_variation_is_a_choice(piper_voice: Any) -> None:
    """The agent's voice varies from one rendering to the next; the scripted caller's does not."""
    from dialgraph.telephony.speech.offline_tts import render_piper

    text = "I would like to book an appointment."
    assert render_piper(piper_voice, text, variation=False) == render_piper(piper_voice, text, variation=False)
    assert render_piper(piper_voice, text) != render_piper(piper_voice, text)
