"""Voice activity detectors (see ``telephony.speech.VoiceActivityDetector``)."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.speech.base import SAMPLE_RATE
from dialgraph.telephony.speech.workers import verify_model_files


class EnergyVad:
    """Frame energy against an adaptive noise floor. Cheap (~2 us a frame) and crude:
    the fallback when no model-based VAD is installed, and a gate in front of one."""

    def __init__(self, *, threshold_db: float = 12.0, min_dbfs: float = -45.0) -> None:
        self.threshold_db = threshold_db
        self.min_dbfs = min_dbfs
        self._floor_db = -60.0

    def speech_probability(self, frame: bytes) -> float:
        rms = audioop.rms(audioop.ulaw2lin(frame, 2), 2)
        level = 20 * math.log10(rms / 32768) if rms > 0 else -96.0
        above = level - max(self._floor_db, -70.0)
        # Track the floor: fall fast, rise slowly, so speech does not become the floor.
        self._floor_db += (level - self._floor_db) * (0.2 if level < self._floor_db else 0.005)
        if level < self.min_dbfs:
            return 0.0
        return max(0.0, min(1.0, above / (2 * self.threshold_db)))

    def reset(self) -> None:
        self._floor_db = -60.0


# silero-vad's 8/16 kHz ONNX model ships in telephony/data (MIT, see silero_vad.LICENSE there),
# copied from the silero-vad 6.2.3 wheel, whose package needs torch; pinned so a swapped or
# truncated file is refused at load.
SILERO_ONNX_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
_SILERO_WINDOW = 256  # samples per model call at 8 kHz (32 ms)
_SILERO_CONTEXT = 32  # samples of the previous window the model expects in front


def silero_model_path() -> Path:
    """The silero-vad ONNX file shipped in this package (needs only onnxruntime)."""
    return Path(__file__).resolve().parent / "data" / "silero_vad.onnx"


@functools.cache
def _silero_session(path: str) -> Any:
    import onnxruntime  # the offline extra

    verify_model_files(Path(path).parent, {Path(path).name: SILERO_ONNX_SHA256})
    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class SileroVad:
    """silero-vad's ONNX model at 8 kHz on onnxruntime, one state per call.

    Twilio frames are 160 samples, the model takes 256: frames accumulate and the model
    runs once a window is full (about every 1.6 frames); between runs the last probability
    stands. An energy gate in front skips the model on windows of plain silence, so a
    silent line costs a few microseconds a frame. The ONNX session is shared per process
    (onnxruntime sessions are thread-safe); load it once with ``SileroVad.preload()`` in a
    thread to keep the hash check off the event loop.
    """

    def __init__(self, *, gate_dbfs: float = -55.0, model_path: Path | None = None) -> None:
        self._session = _silero_session(str(model_path or silero_model_path()))
        self._gate_rms = 32768 * 10 ** (gate_dbfs / 20)
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    @staticmethod
    def preload(model_path: Path | None = None) -> None:
        _silero_session(str(model_path or silero_model_path()))

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._window = np.zeros(_SILERO_CONTEXT + _SILERO_WINDOW, dtype=np.float32)
        self._filled = 0  # samples of the current window filled (after the context)
        self._loud = False  # any frame in the current window passed the energy gate
        self._prob = 0.0

    def speech_probability(self, frame: bytes) -> float:
        pcm = audioop.ulaw2lin(frame, 2)
        if audioop.rms(pcm, 2) >= self._gate_rms:
            self._loud = True
        samples = np.frombuffer(pcm, dtype=np.int16)
        pos = 0
        while pos < len(samples):
            take = min(_SILERO_WINDOW - self._filled, len(samples) - pos)
            start = _SILERO_CONTEXT + self._filled
            self._window[start : start + take] = samples[pos : pos + take] * (1 / 32768)
            self._filled += take
            pos += take
            if self._filled == _SILERO_WINDOW:
                self._run_window()
        return self._prob

    def _run_window(self) -> None:
        if self._loud:
            out, self._state = self._session.run(
                None, {"input": self._window[None, :], "state": self._state, "sr": self._sr}
            )
            self._prob = float(out[0, 0])
        else:
            self._prob = 0.0
        self._window[:_SILERO_CONTEXT] = self._window[-_SILERO_CONTEXT:]
        self._filled = 0
        self._loud = False


class WebRtcVad:
    """webrtcvad (GMM, ~3 us a frame): light, but calls most noise speech. 0.0 or 1.0."""

    def __init__(self, *, aggressiveness: int = 3) -> None:
        import webrtcvad  # the offline extra (webrtcvad-wheels)

        self._vad = webrtcvad.Vad(aggressiveness)

    def speech_probability(self, frame: bytes) -> float:
        return 1.0 if self._vad.is_speech(audioop.ulaw2lin(frame, 2), SAMPLE_RATE) else 0.0

    def reset(self) -> None:
        pass
