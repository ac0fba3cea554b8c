"""Whisper's endpoint with the Smart Turn detector (offline_asr.py): a caller trailing off
into "um" is held past the fixed endpoint, a finished sentence ends before it.

Real whisper, piper and Smart Turn; the pool is left to finish after each pushed frame, so
what the stream emitted depends on the pushed frames, not on the machine's speed.
The trade-off the defaults come from is measured by ``python -m bench.turn_taking``."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from dialgraph.telephony.audio import silence
from dialgraph.telephony.speech.base import FRAME_BYTES, FRAME_MS, Final, RecognitionEvent
from dialgraph.telephony.speech.workers import SpeechWorkers
from tests.speech.conftest import needs_offline, similarity

pytestmark = [
    pytest.mark.slow,
    needs_offline,
    pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime"),
]


class TrackedWorkers(SpeechWorkers):
    """The real pool, counting jobs by kind and knowing when none is in flight on the loop
    (``pending`` drops in the worker thread, before the loop has seen the result)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.inflight = 0
        self.idle = asyncio.Event()
        self.jobs: dict[str, int] = {}

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kind = getattr(fn, "__name__", "")
        self.jobs[kind] = self.jobs.get(kind, 0) + 1
        self.inflight += 1
        self.idle.clear()
        try:
            return await super().run(fn, *args, **kwargs)
        finally:
            self.inflight -= 1
            if not self.inflight:
                self.idle.set()


async def _settle(pool: TrackedWorkers) -> None:
    """Run the loop until every job started so far, and what it set off, is done."""
    async with asyncio.timeout(60):
        while True:
            for _ in range(8):
                await asyncio.sleep(0)
            if not pool.inflight:
                return
            await pool.idle.wait()


def _trim(audio: bytes, *, head: bool = False) -> bytes:
    """Drop piper's near-silence at the end (``head``: the start too), so a test sets the pause."""
    from dialgraph.telephony.audio import audioop

    def quiet(at: int) -> bool:
        return audioop.rms(audioop.ulaw2lin(audio[at : at + FRAME_BYTES], 2), 2) < 100

    end = len(audio) - len(audio) % FRAME_BYTES
    while end > FRAME_BYTES and quiet(end - FRAME_BYTES):
        end -= FRAME_BYTES
    start = 0
    while head and start < end - FRAME_BYTES and quiet(start):
        start += FRAME_BYTES
    return audio[start:end]


class Listener:
    """One stream's events as they come out, read by a task of its own."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.events: list[RecognitionEvent] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.stream:
            self.events.append(event)

    @property
    def finals(self) -> list[Final]:
        return [e for e in self.events if isinstance(e, Final)]

    async def feed(self, audio: bytes, pool: TrackedWorkers) -> None:
        """Push ``audio`` frame by frame, letting the pool finish after each frame: on the
        audio clock, every decode and verdict is back before the next frame."""
        for i in range(0, len(audio), FRAME_BYTES):
            self.stream.push(audio[i : i + FRAME_BYTES])
            await _settle(pool)

    async def end(self) -> list[Final]:
        await self.stream.end_input()
        async with asyncio.timeout(60):
            await self._task
        await self.stream.aclose()
        return self.finals


@pytest.fixture(scope="module")
def detector() -> Any:
    from dialgraph.telephony.speech.turn_detector import SmartTurnDetector

    found = SmartTurnDetector()
    found.preload()
    return found


@pytest.fixture
def pool() -> Iterator[TrackedWorkers]:
    found = TrackedWorkers(2)
    yield found
    found.shutdown()


def _recognizer(whisper_model: Any, pool: SpeechWorkers, detector: Any | None, **turn: Any) -> Any:
    from dialgraph.telephony.speech.offline_asr import WhisperRecognizer
    from dialgraph.telephony.speech.vad import SileroVad

    return WhisperRecognizer(whisper_model, workers=pool, vad_factory=SileroVad, turn_detector=detector, **turn)


async def test_a_turn_trailing_off_into_um_is_held_past_the_endpoint(
    piper_voice: Any, whisper_model: Any, detector: Any, pool: TrackedWorkers
) -> None:
    from dialgraph.telephony.speech.offline_tts import render_piper

    start, rest = "I was wondering if, um", "you have anything open next week."
    audio = (
        silence(300)
        + _trim(render_piper(piper_voice, start, variation=False))
        + silence(700)
        + _trim(render_piper(piper_voice, rest, variation=False), head=True)
        + silence(1500)
    )
    # The fixed 500 ms endpoint alone ends the turn in the pause: two Finals.
    plain = Listener(_recognizer(whisper_model, pool, None).stream())
    await plain.feed(audio, pool)
    assert len(await plain.end()) == 2, plain.finals

    # The detector hears the "um" and holds the turn open: one Final, every word.
    held = Listener(_recognizer(whisper_model, pool, detector).stream())
    await held.feed(audio, pool)
    finals = await held.end()
    assert len(finals) == 1, finals
    assert finals[0].speech_final
    assert similarity("I was wondering if you have anything open next week", finals[0].text) >= 0.8, finals
    assert pool.jobs.get("probability_complete", 0) >= 2  # the pause, then the end of the turn


async def test_a_finished_sentence_ends_before_the_endpoint(
    piper_voice: Any, whisper_model: Any, detector: Any, pool: TrackedWorkers
) -> None:
    from dialgraph.telephony.speech.offline_asr import WhisperRecognizer
    from dialgraph.telephony.speech.offline_tts import render_piper

    said = "Can you help me reschedule?"  # Smart Turn: p ~0.98 after it
    speech = silence(300) + _trim(render_piper(piper_voice, said, variation=False))
    defaults = WhisperRecognizer.__init__.__kwdefaults__
    assert defaults is not None
    base = defaults["endpointing_ms"] // FRAME_MS
    shorter = defaults["turn_endpoint_ms"] // FRAME_MS + 2  # the endpoint after a "complete" verdict
    at_pause = defaults["turn_pause_ms"] // FRAME_MS + 3  # the pause has been scored
    assert at_pause < shorter < base

    def gap(frames: int) -> bytes:
        return silence(frames * FRAME_MS)

    # Without the detector the turn stays open until the plain endpoint.
    plain = Listener(_recognizer(whisper_model, pool, None).stream())
    await plain.feed(speech + gap(shorter), pool)
    assert plain.finals == []
    await plain.feed(gap(base - shorter + 2), pool)
    assert len(plain.finals) == 1
    await plain.end()

    # The defaults: a confident "complete" moves the endpoint in.
    default = Listener(_recognizer(whisper_model, pool, detector).stream())
    await default.feed(speech + gap(shorter), pool)
    assert len(default.finals) == 1, default.events
    assert default.finals[0].speech_final and similarity(said, default.finals[0].text) >= 0.8
    assert len(await default.end()) == 1

    # With ``turn_end_above`` the turn ends at the pause itself.
    early = Listener(_recognizer(whisper_model, pool, detector, turn_end_above=0.9).stream())
    await early.feed(speech + gap(at_pause), pool)
    assert len(early.finals) == 1, early.events
    assert early.finals[0].speech_final and similarity(said, early.finals[0].text) >= 0.8
    assert len(await early.end()) == 1


async def test_a_saturated_pool_skips_the_detector_and_keeps_the_endpoint(
    piper_voice: Any, whisper_model: Any, detector: Any
) -> None:
    import threading

    from dialgraph.telephony.speech.offline_tts import render_piper

    pool = TrackedWorkers(1)
    release = threading.Event()
    try:
        # Real work fills the pool (run past the counting wrapper: it is not this stream's).
        busy = asyncio.create_task(SpeechWorkers.run(pool, release.wait, 30))
        await asyncio.sleep(0.05)
        assert pool.pending >= pool.size
        said = "Can you help me reschedule?"
        listener = Listener(_recognizer(whisper_model, pool, detector).stream())
        await listener.feed(silence(300) + _trim(render_piper(piper_voice, said, variation=False)), pool)
        await listener.feed(silence(400), pool)
        assert pool.jobs == {} and listener.finals == []  # no guess, no verdict: still open
        release.set()
        await busy
        await listener.feed(silence(200), pool)  # the plain endpoint closes it, decoded whole
        assert len(listener.finals) == 1 and similarity(said, listener.finals[0].text) >= 0.8
        assert pool.jobs == {"decode_segment": 1}
        await listener.end()
    finally:
        release.set()
        pool.shutdown()
