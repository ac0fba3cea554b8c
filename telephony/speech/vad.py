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
_WINDOW_BYTES = 2 * _SILERO_WINDOW
# The gate's noise floor (dBFS): where it starts, how low it goes, how fast it follows a frame
# below it (per frame) and above it (per frame of non-speech: ~1 s to climb 20 dB within 6).
_FLOOR_START_DB = -60.0
_FLOOR_MIN_DB = -70.0
_FLOOR_FALL = 0.3
_FLOOR_RISE = 0.02


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
    stands. A model run costs ~0.1 ms, the largest per-frame cost of a call while the agent
    talks, so an energy gate in front skips it (probability 0) on windows with no frame
    above ``gate_dbfs`` (plain silence) or, with ``floor_margin_db``, none at least that far
    above the line's noise floor (steady hiss or hum: a model would call it silence too).
    The floor follows the frame level down fast and up slowly, and only while the model
    does not hear speech; once it does (probability >= ``hold``) the gate stays open, so a
    soft syllable after a loud one is still judged, and the floor never climbs into speech.
    A frame that passes the gate opens every window it falls in. Audio waits as 16-bit PCM
    and becomes the model's floats only for a window that runs; a skipped window gives just
    its last 32 samples, the context in front of the next run, so that context is always the
    real audio. The model's recurrent state is left as the last run left it (issue 16:
    resetting or re-warming it on the first loud window delayed barge-in onset by up to
    100 ms and made no noise any less likely to barge in; ``bench/vad_gate.py`` measures the
    gate's cost and onsets). The ONNX session is shared per process (onnxruntime sessions
    are thread-safe); load it once with ``SileroVad.preload()`` in a thread to keep the
    hash check off the event loop.
    """

    def __init__(
        self,
        *,
        gate_dbfs: float = -55.0,
        floor_margin_db: float | None = 6.0,
        hold: float = 0.3,
        model_path: Path | None = None,
    ) -> None:
        self._session = _silero_session(str(model_path or silero_model_path()))
        self._gate_rms = 32768 * 10 ** (gate_dbfs / 20)
        self._margin = floor_margin_db
        self._hold = hold
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.runs = 0  # model runs (benchmarks and tests read it)
        self.reset()

    @staticmethod
    def preload(model_path: Path | None = None) -> None:
        _silero_session(str(model_path or silero_model_path()))

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input = np.zeros((1, _SILERO_CONTEXT + _SILERO_WINDOW), dtype=np.float32)  # context + window
        self._pcm = bytearray()  # the current window so far, 16-bit PCM
        self._loud = False  # a frame in the current window passed the energy gate
        self._prob = 0.0
        self._floor_db = _FLOOR_START_DB

    def speech_probability(self, frame: bytes) -> float:
        pcm = audioop.ulaw2lin(frame, 2)
        loud = self._passes_gate(audioop.rms(pcm, 2))
        buf = self._pcm
        buf += pcm
        self._loud = self._loud or loud
        while len(buf) >= _WINDOW_BYTES:
            self._run_window(buf[:_WINDOW_BYTES])
            del buf[:_WINDOW_BYTES]
            self._loud = loud and bool(buf)  # the rest of a loud frame opens the next window
        return self._prob

    def _passes_gate(self, rms: int) -> bool:
        """Whether one frame is worth the model; tracks the noise floor on the way."""
        if self._margin is None:
            return rms >= self._gate_rms
        if self._prob >= self._hold:
            return rms >= self._gate_rms  # in speech: the floor stands still
        level = 20 * math.log10(rms / 32768) if rms > 0 else -96.0
        floor = self._floor_db
        loud = rms >= self._gate_rms and level >= floor + self._margin
        floor += (level - floor) * (_FLOOR_FALL if level < floor else _FLOOR_RISE)
        self._floor_db = max(floor, _FLOOR_MIN_DB)
        return loud

    def _run_window(self, pcm: bytes | bytearray) -> None:
        samples = np.frombuffer(pcm, dtype=np.int16)
        x = self._input
        if self._loud:
            self.runs += 1
            x[0, _SILERO_CONTEXT:] = samples * (1 / 32768)
            out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
            self._prob = float(out[0, 0])
            x[0, :_SILERO_CONTEXT] = x[0, -_SILERO_CONTEXT:]
        else:
            self._prob = 0.0
            x[0, :_SILERO_CONTEXT] = samples[-_SILERO_CONTEXT:] * (1 / 32768)


class WebRtcVad:
    """webrtcvad (GMM, ~3 us a frame): light, but calls most noise speech. 0.0 or 1.0."""

    def __init__(self, *, aggressiveness: int = 3) -> None:
        import webrtcvad  # the offline extra (webrtcvad-wheels)

        self._vad = webrtcvad.Vad(aggressiveness)

    def speech_probability(self, frame: bytes) -> float:
        return 1.0 if self._vad.is_speech(audioop.ulaw2lin(frame, 2), SAMPLE_RATE) else 0.0

    def reset(self) -> None:
        pass
