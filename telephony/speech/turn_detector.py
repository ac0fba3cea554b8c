"""Semantic end of turn: has the caller finished, or only paused mid-sentence?

ASR endpointing hears silence; "I'd like to book an appointment for ..." followed by a
breath is silence too. A turn detector scores the caller's turn at such a pause:
``probability_complete(audio_window, text)`` near 1 means the turn is over, near 0 that
more is coming. It runs only at pauses (a few times a turn, never per frame) and always in
the bounded speech pool (``score_in_pool``): a call costs tens of milliseconds of CPU
there, which the event loop must never wait on.

``SmartTurnDetector`` is Pipecat's Smart Turn v3.2 (a Whisper-tiny encoder with a linear
head, ~8M parameters, int8): audio only, so ``text`` is ignored (it stays in the interface
for text-based detectors). Its ONNX file ships in ``data/`` (BSD-2-Clause, see
``smart-turn-v3.2-cpu.LICENSE`` there), copied from the ``pipecat-ai`` 1.14.0 wheel, whose
package pulls a whole framework. Input as its authors feed it: 16 kHz mono float, the last
8 s of the turn, zeros in front when shorter, Whisper log-mel features (transformers'
``WhisperFeatureExtractor(chunk_length=8)``, computed here in numpy), one sigmoid out.
It is trained on 23 languages; accuracy on code-mixed Hindi-English is reported lower:
``python -m bench.turn_detector`` measures it per language before a flow relies on it.
It hears prosody more than words: on piper-rendered phone audio it holds every turn that
trails off into "um" (p ~0.01) but passes most sentences stopped mid-way (and any fragment
read with a sentence's falling end), so a low threshold (hold the turn only when the model
is sure) is the way to use it.

onnxruntime is in the ``offline`` extra: it is imported when the model first loads, so
this module imports (and a cloud install starts) without it.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soxr

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.speech.base import FRAME_BYTES, FRAME_MS, SAMPLE_RATE
from dialgraph.telephony.speech.workers import SpeechWorkers, verify_model_files

# Copied unchanged from pipecat_ai-1.14.0-py3-none-any.whl,
# pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx; pinned so a swapped or
# truncated file is refused at load.
SMART_TURN_ONNX = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_ONNX_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"

MODEL_RATE = 16_000
WINDOW_S = 8  # the model sees the last 8 s of the turn
WINDOW_FRAMES = WINDOW_S * 1000 // FRAME_MS  # call frames in a window

# Whisper's front end (transformers' WhisperFeatureExtractor defaults, chunk_length=8).
_N_FFT = 400
_HOP = 160
_N_MELS = 80
_N_SAMPLES = WINDOW_S * MODEL_RATE
_N_FRAMES = _N_SAMPLES // _HOP  # 800 feature frames


class TurnDetector(Protocol):
    """Scores a pause: is the caller's turn complete? Blocking and CPU-bound: call it
    through ``score_in_pool``, never on the event loop."""

    def probability_complete(self, audio_window: bytes, text: str) -> float:
        """``audio_window``: the caller's turn so far, 8 kHz mu-law (the detector keeps
        what it needs of the end); ``text``: its transcript so far. Returns a value in [0, 1]."""
        ...


async def score_in_pool(workers: SpeechWorkers, detector: TurnDetector, audio_window: bytes, text: str) -> float:
    """``detector.probability_complete`` in the bounded speech pool, off the event loop."""
    return await workers.run(detector.probability_complete, audio_window, text)


class TurnAudio:
    """The caller's audio of the current turn, as the detector wants it: the last 8 s of
    20 ms frames. ``push`` is a deque append (per frame, nothing more); ``window`` joins
    them once, at a pause."""

    def __init__(self, frames: int = WINDOW_FRAMES) -> None:
        self._frames: deque[bytes] = deque(maxlen=frames)

    def push(self, frame: bytes) -> None:
        self._frames.append(frame)

    def window(self) -> bytes:
        return b"".join(self._frames)

    def clear(self) -> None:
        self._frames.clear()

    @property
    def seconds(self) -> float:
        return len(self._frames) * FRAME_BYTES / SAMPLE_RATE


# --- Whisper log-mel features in numpy -------------------------------------------------------
def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, Whisper's): linear below 1 kHz, log above."""
    mel = 3.0 * hz / 200.0
    log_part = hz >= 1000.0
    return np.where(log_part, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), hz)


def mel_filters(n_fft: int = _N_FFT, n_mels: int = _N_MELS, rate: int = MODEL_RATE) -> np.ndarray:
    """Slaney-normalised triangular filters, ``(n_fft // 2 + 1, n_mels)``, 0 Hz to Nyquist."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(rate / 2)), n_mels + 2))
    bins = np.linspace(0, rate // 2, n_fft // 2 + 1)
    slopes = edges[None, :] - bins[:, None]  # (bins, n_mels + 2)
    widths = np.diff(edges)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


_MEL_T = mel_filters().T.astype(np.float32)  # (80, 201)
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_N_FFT) / _N_FFT)).astype(np.float32)  # periodic


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper's input features for exactly ``WINDOW_S`` s of 16 kHz audio: ``(80, 800)`` float32.

    The steps of ``WhisperFeatureExtractor(chunk_length=8)(audio, do_normalize=True)`` on
    an input already 128,000 samples long: zero mean and unit variance over the window,
    a centred (reflect-padded) STFT with a 400-point periodic Hann window every 160
    samples, power, 80 Slaney mel bands, log10 floored at 1e-10, the last frame dropped,
    values clamped to 8 below the maximum, then ``(x + 4) / 4``. float32 throughout:
    transformers 5.25 computes in float64, and differs from this by at most 8e-6 (the
    model's output by less than 1e-6) on speech, noise and tones.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.shape != (_N_SAMPLES,):
        raise ValueError(f"expected {_N_SAMPLES} samples, got {x.shape}")
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x, _N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]  # (801, 400), a view
    spectrum = np.fft.rfft(frames * _HANN, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # (801, 201)
    mel = _MEL_T @ power.T.astype(np.float32)  # (80, 801)
    spec = np.log10(np.maximum(mel, 1e-10))[:, :_N_FRAMES]
    spec = np.maximum(spec, spec.max() - 8.0)
    return ((spec + 4.0) / 4.0).astype(np.float32)


def model_input(audio_window: bytes) -> np.ndarray:
    """8 kHz mu-law -> the last ``WINDOW_S`` s at 16 kHz, zeros in front -> ``(1, 80, 800)``."""
    ulaw = audio_window[-WINDOW_S * SAMPLE_RATE :]
    pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype="<i2").astype(np.float32) * (1 / 32768)
    wide = soxr.resample(pcm, SAMPLE_RATE, MODEL_RATE, quality="HQ") if pcm.size else pcm
    window = np.zeros(_N_SAMPLES, dtype=np.float32)
    tail = wide[-_N_SAMPLES:]
    window[_N_SAMPLES - tail.size :] = tail
    return log_mel(window)[None, :, :]


def smart_turn_model_path() -> Path:
    """Smart Turn v3.2's int8 CPU ONNX file shipped in this package (needs only onnxruntime)."""
    return Path(__file__).resolve().parent / "data" / SMART_TURN_ONNX


class SmartTurnDetector:
    """Smart Turn v3.2 on onnxruntime (one intra-op thread: the pool gives parallelism).

    The session loads (and the file's hash is checked) on first use, in whichever worker
    thread gets there first; ``preload()`` does it ahead of the first call. One instance
    serves every call of a process: onnxruntime sessions are safe to run from several
    threads at once.
    """

    def __init__(self, model_path: Path | None = None) -> None:
        self.model_path = model_path or smart_turn_model_path()
        self._session: Any = None
        self._lock = threading.Lock()

    def preload(self) -> None:
        """Load the model now (blocking: a thread or the pool, not the event loop)."""
        self._load()

    def _load(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime  # the offline extra

                verify_model_files(self.model_path.parent, {self.model_path.name: SMART_TURN_ONNX_SHA256})
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
                self._session = onnxruntime.InferenceSession(
                    str(self.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            return self._session

    def probability_complete(self, audio_window: bytes, text: str = "") -> float:
        """The model's probability that the turn in ``audio_window`` is complete (``text`` unused)."""
        session = self._session or self._load()
        (out,) = session.run(None, {"input_features": model_input(audio_window)})
        return float(out[0, 0])
