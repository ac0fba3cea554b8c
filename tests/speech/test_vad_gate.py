"""silero behind the noise-floor gate: the model is skipped on a steady line, never on speech."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.call.turn_policy import TurnPolicy
from dialgraph.telephony.speech.base import FRAME_BYTES
from tests.speech.conftest import needs_offline

pytest.importorskip("onnxruntime")


def line_noise(dbfs: float, seconds: float, seed: int = 1) -> bytes:
    x = np.random.default_rng(seed).normal(0, 32768 * 10 ** (dbfs / 20), int(seconds * 8000))
    return audioop.lin2ulaw(np.clip(x, -32768, 32767).astype("<i2").tobytes(), 2)


def frames(audio: bytes) -> list[bytes]:
    return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES)]


def test_a_steady_line_stops_costing_model_runs_once_the_floor_is_learnt() -> None:
    from dialgraph.telephony.speech.vad import SileroVad

    gated, silence_only = SileroVad(), SileroVad(floor_margin_db=None)
    settle, steady = frames(line_noise(-45, 2.0)), frames(line_noise(-45, 4.0, seed=2))
    for f in settle:
        gated.speech_probability(f)
        silence_only.speech_probability(f)
    runs = gated.runs, silence_only.runs
    probs = [gated.speech_probability(f) for f in steady]
    for f in steady:
        silence_only.speech_probability(f)
    assert gated.runs == runs[0]  # four seconds of hiss: not one model run
    assert max(probs) == 0.0
    assert silence_only.runs - runs[1] >= 120  # the -55 dBFS gate alone runs it every window
    gated.reset()
    assert [gated.speech_probability(f) for f in frames(b"\xff" * 8000)] == [0.0] * 50


@needs_offline
def test_speech_after_a_learnt_floor_barges_in_as_fast_as_the_ungated_model(piper_voice: Any) -> None:
    from dialgraph.telephony.speech.offline_tts import render_piper
    from dialgraph.telephony.speech.vad import SileroVad

    speech = render_piper(piper_voice, "Sorry, can I stop you there?", variation=False)
    noise = line_noise(-45, 3.0)
    mixed = np.frombuffer(audioop.ulaw2lin(speech, 2), dtype=np.int16) + np.frombuffer(
        audioop.ulaw2lin(line_noise(-45, len(speech) / 8000, seed=5), 2), dtype=np.int16
    )
    audio = noise + audioop.lin2ulaw(np.clip(mixed, -32768, 32767).astype("<i2").tobytes(), 2)
    onset = len(noise) / 8000

    def barge_in_at(vad: SileroVad) -> float:
        policy = TurnPolicy(barge_in_min_ms=200)
        policy.agent_turn_started()
        policy.agent_audio_started()
        for i, f in enumerate(frames(audio)):
            if policy.vad(i * 0.02, vad.speech_probability(f)):
                return i * 0.02 + 0.02 - onset
        raise AssertionError("no barge-in")

    gated, ungated = SileroVad(), SileroVad(gate_dbfs=float("-inf"), floor_margin_db=None)
    delay, reference = barge_in_at(gated), barge_in_at(ungated)
    assert delay <= 0.25 + 0.1  # the phrase's first 100 ms may be breath (onset of the file, not the voice)
    assert delay <= reference + 0.04
    assert gated.runs < ungated.runs
