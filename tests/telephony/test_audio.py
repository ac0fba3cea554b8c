"""Mu-law and resampling helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialgraph.telephony import audio


def _sine(rate: int, hz: float, seconds: float, amplitude: float = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype("<i2")


def test_silence_frame_decodes_to_zero() -> None:
    assert len(audio.SILENCE_FRAME) == 160
    assert set(np.frombuffer(audio.ulaw_to_pcm16(audio.SILENCE_FRAME), "<i2")) == {0}
    assert audio.silence(100) == audio.SILENCE_FRAME * 5


@given(st.binary(max_size=400))
def test_ulaw_survives_a_pcm_round_trip(ulaw: bytes) -> None:
    pcm = audio.ulaw_to_pcm16(ulaw)
    assert len(pcm) == 2 * len(ulaw)
    back = audio.pcm16_to_ulaw(pcm)
    # 0x7F and 0xFF both mean zero; every other code maps back to itself.
    assert [b if b != 0x7F else 0xFF for b in back] == [b if b != 0x7F else 0xFF for b in ulaw]


def test_odd_pcm_is_refused() -> None:
    with pytest.raises(ValueError):
        audio.pcm16_to_ulaw(b"\x00")


def test_resampler_streams_like_one_shot() -> None:
    pcm = _sine(22050, 440, 1.0).tobytes()
    whole = audio.Resampler(22050)
    one_shot = whole.process(pcm, last=True)
    pieces = audio.Resampler(22050)
    out = b"".join(pieces.process(pcm[i : i + 1001]) for i in range(0, len(pcm), 1001)) + pieces.flush()
    assert len(one_shot) == len(out) == 2 * 8000
    a, b = np.frombuffer(one_shot, "<i2").astype(float), np.frombuffer(out, "<i2").astype(float)
    assert np.max(np.abs(a - b)) <= 2  # odd splits are carried over, state is kept


def test_pcm22k_to_ulaw8k_keeps_the_tone_and_drops_aliasing() -> None:
    r = audio.Resampler(22050)
    tone = _sine(22050, 440, 1.0)
    alias = _sine(22050, 6000, 1.0)  # above 4 kHz: must not fold back into the band
    ulaw = audio.pcm16_to_ulaw8k((tone + alias).astype("<i2").tobytes(), r, last=True)
    assert len(ulaw) == 8000
    spectrum = np.abs(np.fft.rfft(np.frombuffer(audio.ulaw_to_pcm16(ulaw), "<i2").astype(float)))
    freqs = np.fft.rfftfreq(8000, 1 / 8000)
    assert abs(freqs[np.argmax(spectrum)] - 440) < 2
    folded = spectrum[np.argmin(np.abs(freqs - 2000))]  # 6 kHz would alias to 2 kHz
    assert folded < spectrum.max() / 100


def test_ulaw8k_to_pcm_with_and_without_resampler() -> None:
    ulaw = audio.pcm16_to_ulaw(_sine(8000, 300, 0.5).tobytes())
    assert len(audio.ulaw8k_to_pcm16(ulaw)) == 8000
    up = audio.ulaw8k_to_pcm16(ulaw, audio.Resampler(8000, 16000), last=True)
    assert len(up) == 2 * 8000
    with pytest.raises(ValueError):
        audio.pcm16_to_ulaw8k(b"", audio.Resampler(22050, 16000))
