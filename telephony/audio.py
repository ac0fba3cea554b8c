"""Mu-law and resampling, pure (no I/O): what sits between 8 kHz phone audio and PCM.

The production path never transcodes (Deepgram takes mu-law, ElevenLabs emits
``ulaw_8000``); these helpers serve the offline stack (piper speaks 22,050 Hz PCM), the
simulator and tests. ``Resampler`` keeps soxr's filter state between chunks, so one
instance belongs to one audio stream (one call's TTS, one recording) and never another.
"""

from __future__ import annotations

import sys

import numpy as np
import soxr

if sys.version_info >= (3, 13):  # pragma: no cover - depends on the interpreter
    import audioop  # the audioop-lts backport installs under the stdlib's name
else:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

SAMPLE_RATE = 8000  # Twilio Media Streams: 8 kHz mu-law, mono
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_MS = 20

# 0xFF is mu-law for the zero sample (0x7F is "negative zero"); both decode to 0.
ULAW_SILENCE_BYTE = 0xFF
SILENCE_FRAME = bytes([ULAW_SILENCE_BYTE]) * FRAME_BYTES  # 20 ms of mu-law silence


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Mu-law bytes -> little-endian signed 16-bit PCM (twice as long)."""
    return audioop.ulaw2lin(ulaw, 2)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Little-endian signed 16-bit PCM -> mu-law (half as long). ``pcm`` must be even-length."""
    if len(pcm) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    return audioop.lin2ulaw(pcm, 2)


def silence(ms: int) -> bytes:
    """``ms`` milliseconds of 8 kHz mu-law silence."""
    return bytes([ULAW_SILENCE_BYTE]) * (SAMPLE_RATE * ms // 1000)


class Resampler:
    """Streaming 16-bit mono PCM rate conversion with soxr (HQ), state kept between chunks.

    ``process(pcm)`` returns what is ready so far; ``process(b"", last=True)`` (or
    ``flush()``) returns the filter's tail at the end of the stream. Odd trailing bytes of
    a chunk are carried over to the next one, so callers may split PCM anywhere.
    """

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE, *, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )
        self._carry = b""

    def process(self, pcm: bytes, *, last: bool = False) -> bytes:
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) % 2:
            pcm, self._carry = pcm[:-1], pcm[-1:]
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return out.astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        """The remaining output at the end of the stream."""
        self._carry = b""
        return self.process(b"", last=True)


def pcm16_to_ulaw8k(pcm: bytes, resampler: Resampler, *, last: bool = False) -> bytes:
    """PCM at ``resampler.in_rate`` -> 8 kHz mu-law, continuing the stream ``resampler`` holds."""
    if resampler.out_rate != SAMPLE_RATE:
        raise ValueError("resampler must output 8000 Hz")
    out = resampler.process(pcm, last=last)
    return audioop.lin2ulaw(out, 2) if out else b""


def ulaw8k_to_pcm16(ulaw: bytes, resampler: Resampler | None = None, *, last: bool = False) -> bytes:
    """8 kHz mu-law -> PCM at ``resampler.out_rate`` (8 kHz when no resampler is given)."""
    pcm = audioop.ulaw2lin(ulaw, 2)
    if resampler is None:
        return pcm
    if resampler.in_rate != SAMPLE_RATE:
        raise ValueError("resampler must take 8000 Hz")
    return resampler.process(pcm, last=last)
