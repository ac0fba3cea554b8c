"""The offline stack: round trip (piper -> 8 kHz mu-law -> silero + whisper), VAD, model checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from telephony.audio import silence
from telephony.offline_tts import parse_wav
from telephony.speech import FRAME_BYTES, Final, SpeechStarted
from telephony.speech_workers import ModelIntegrityError, SpeechWorkers, verify_model_files
from tests.speech.conftest import needs_offline, phrase_source, similarity

ROUND_TRIP = [
    "I would like to book an appointment for next Tuesday.",
    "Can you tell me your opening hours on Saturday?",
    "Please transfer me to the billing team.",
    "Cancel my Friday visit, please, something came up.",
]


@pytest.mark.slow
@needs_offline
async def test_round_trip_piper_to_whisper(piper_voice: Any, whisper_model: Any, workers: SpeechWorkers) -> None:
    from telephony.offline_asr import WhisperRecognizer
    from telephony.offline_tts import OfflineSynthesizer
    from telephony.vad import SileroVad

    tts = OfflineSynthesizer(voice=piper_voice, workers=workers)
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

    from telephony.audio_compat import audioop
    from telephony.offline_tts import render_piper
    from telephony.vad import SileroVad, WebRtcVad

    speech = render_piper(piper_voice, "Hello, I would like to speak to someone about my bill.")
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
