"""Voice activity detectors (see ``telephony.speech.VoiceActivityDetector``)."""

from __future__ import annotations

import math


from telephony.audio_compat import audioop


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
