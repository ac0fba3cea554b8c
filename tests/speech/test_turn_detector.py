"""Smart Turn v3.2 as the turn detector: the shipped file, the Whisper front end in numpy,
its verdicts on rendered phone audio, and scoring in the speech pool off the event loop.

Accuracy is measured by ``python -m bench.turn_detector``; these tests hold the wiring."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dialgraph.telephony.audio import FRAME_BYTES, SAMPLE_RATE, audioop, silence
from dialgraph.telephony.speech.turn_detector import (
    SMART_TURN_ONNX_SHA256,
    WINDOW_S,
    SmartTurnDetector,
    TurnAudio,
    log_mel,
    model_input,
    score_in_pool,
    smart_turn_model_path,
)
from dialgraph.telephony.speech.workers import ModelIntegrityError, SpeechWorkers
from tests.speech.conftest import needs_offline

needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")


def _tone_chirp() -> np.ndarray:
    """3 s of tones and a chirp at the end of an 8 s window (zeros in front)."""
    t = np.arange(3 * 16_000) / 16_000
    x = (
        0.3 * np.sin(2 * np.pi * 440 * t)
        + 0.2 * np.sin(2 * np.pi * (200 + 600 * t) * t) * (t < 2)
        + 0.05 * np.sin(2 * np.pi * 3100 * t)
    )
    out = np.zeros(WINDOW_S * 16_000, np.float32)
    out[-x.size :] = x
    return out


def _ulaw(x: np.ndarray) -> bytes:
    return audioop.lin2ulaw((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes(), 2)


def test_the_model_and_its_licence_ship_in_the_package() -> None:
    path = smart_turn_model_path()
    assert path.parent == Path(__file__).resolve().parents[2] / "telephony" / "speech" / "data"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SMART_TURN_ONNX_SHA256
    licence = (path.parent / "smart-turn-v3.2-cpu.LICENSE").read_text()
    assert "BSD 2-Clause License" in licence and "Daily" in licence and SMART_TURN_ONNX_SHA256 in licence


def test_features_match_whispers_feature_extractor() -> None:
    # Reference values: transformers 5.25 WhisperFeatureExtractor(chunk_length=8)(x,
    # sampling_rate=16000, padding="max_length", max_length=128000, truncation=True,
    # do_normalize=True) on the same signal (computed in float64 there).
    features = log_mel(_tone_chirp())
    assert features.shape == (80, 800) and features.dtype == np.float32
    expected = {
        (10, 500): 1.559988,
        (20, 700): 0.659225,
        (40, 620): 1.348052,
        (60, 799): 0.065682,
        (10, 560): 1.649782,
        (45, 650): 1.342552,
        (60, 700): 0.671944,
        (12, 660): 1.594568,
        (0, 0): -0.150309,  # the zeros in front: floored 8 (log10) below the maximum
    }
    for (band, frame), value in expected.items():
        assert features[band, frame] == pytest.approx(value, abs=1e-4), (band, frame)
    assert float(features.mean()) == pytest.approx(-0.064203, abs=1e-5)
    assert float(features.std()) == pytest.approx(0.334383, abs=1e-5)
    assert float(features.max()) == pytest.approx(1.849691, abs=1e-5)


def test_the_window_is_the_last_8_seconds_with_zeros_in_front() -> None:
    rng = np.random.default_rng(3)
    tone = _ulaw(0.3 * np.sin(2 * np.pi * 300 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE))
    short = model_input(tone)[0]
    assert short.shape == (80, 800)
    # 2 s of sound at the end: the first 5.5 s are the zeros in front, every frame alike
    # (normalising over the window leaves them a small constant offset, as in transformers)
    assert np.all(short[:, :550] == short[:, :1])
    assert np.abs(short[:, 650:] - short[:, :1]).max() > 1.0
    # 12 s: loud noise first, then the tone after 6 s of silence; the model sees only the end.
    noise = _ulaw(0.5 * rng.standard_normal(4 * SAMPLE_RATE))
    long = noise + silence(6000) + tone
    assert np.array_equal(model_input(long), model_input(silence(6000) + tone))
    assert not np.array_equal(model_input(long), model_input(noise[-SAMPLE_RATE:] + silence(5000) + tone))


def test_turn_audio_keeps_the_last_8_seconds() -> None:
    audio = TurnAudio()
    frames = [bytes([i % 256]) * FRAME_BYTES for i in range(500)]
    for f in frames:
        audio.push(f)
    assert audio.seconds == WINDOW_S
    assert audio.window() == b"".join(frames[-400:])
    audio.clear()
    assert audio.window() == b"" and audio.seconds == 0


def test_importing_the_detector_does_not_import_onnxruntime() -> None:
    """A cloud install (no offline extra) imports the module; the model loads on first use."""
    code = (
        "import sys; import dialgraph.telephony.speech.turn_detector as t; t.SmartTurnDetector(); "
        "assert 'onnxruntime' not in sys.modules, 'imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@needs_onnxruntime
def test_a_tampered_model_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "smart-turn-v3.2-cpu.onnx"
    shutil.copyfile(smart_turn_model_path(), copy)
    with copy.open("r+b") as fh:
        fh.seek(4096)
        fh.write(b"\x00" * 16)
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        SmartTurnDetector(copy).probability_complete(silence(1000), "")


# Said as a caller says them, ending at a pause (200 ms of line silence: the pause that asks
# the detector). The unfinished turns trail off into a filler: the model hears prosody, and
# piper reads a bare fragment ("my number is") with a sentence's falling end, which the
# model takes for a finished turn (bench.turn_detector measures that: "fragment").
COMPLETE = [
    "I'd like to book an appointment for Thursday at ten.",
    "Can you help me reschedule?",
    "Yes, that works for me.",
    "I need to cancel my appointment.",
    "What time do you close today?",
    "Could I speak to a person please?",
    "My name is John Smith.",
    "Is Doctor Miller available on Friday?",
]
TRAILING_OFF = [
    "I'd like to book an appointment for, um",
    "My number is, uh",
    "Can I move my appointment to, um",
    "The reason I'm calling is, uh",
    "I'd like to, uh",
    "Let me think, um",
]


@pytest.mark.slow
@needs_offline
def test_complete_turns_score_higher_than_turns_trailing_off(piper_voice: Any) -> None:
    from dialgraph.telephony.speech.offline_tts import render_piper

    detector = SmartTurnDetector()

    def score(text: str) -> float:
        call_audio = silence(300) + render_piper(piper_voice, text, variation=False) + silence(200)
        return detector.probability_complete(call_audio, text)

    complete = [score(t) for t in COMPLETE]
    trailing = [score(t) for t in TRAILING_OFF]
    assert all(0.0 <= p <= 1.0 for p in complete + trailing)
    assert sum(p > 0.5 for p in complete) >= 6, complete
    assert sum(p < 0.5 for p in trailing) >= 5, trailing
    assert np.median(complete) - np.median(trailing) > 0.5, (complete, trailing)


@needs_onnxruntime
async def test_scoring_runs_in_the_pool_while_the_loop_ticks(workers: SpeechWorkers) -> None:
    detector = SmartTurnDetector()
    await workers.run(detector.preload)
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    class Recorded:
        """The real detector, noting the thread each call runs in."""

        def probability_complete(self, audio_window: bytes, text: str) -> float:
            threads.add(threading.get_ident())
            return detector.probability_complete(audio_window, text)

    rng = np.random.default_rng(5)
    window = _ulaw(0.2 * rng.standard_normal(WINDOW_S * SAMPLE_RATE))
    ticks: list[float] = []
    loop = asyncio.get_running_loop()

    async def ticker() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start, before = loop.time(), len(ticks)
    scores = await asyncio.gather(*(score_in_pool(workers, Recorded(), window, "") for _ in range(6)))
    took, ticked = loop.time() - start, len(ticks) - before
    ticking.cancel()
    assert all(0.0 <= p <= 1.0 for p in scores)
    assert threads and loop_thread not in threads
    # Six model runs (~50 ms of CPU each) on a pool of two: the loop ticked all along.
    assert took > 0.05
    assert ticked >= took / 0.005 / 4, (ticked, took)
