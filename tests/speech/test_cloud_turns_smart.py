"""The cloud path's turn timing (cloud_turns.py) with the real Smart Turn model on real
speech (piper): the energy check finds the pause, the model's verdict ends or holds it.

The Deepgram stand-in hears word-coded audio only, so Deepgram's side is played by the
events a stream would hand over (an interim covering the speech); the pool is left to
finish after each frame, so the outcome depends on the audio, not the machine's speed.
About 1.5 s with the models loaded (not marked slow).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from dialgraph.server.core.flow_config import TurnSettings
from dialgraph.telephony.audio import silence
from dialgraph.telephony.speech.base import FRAME_BYTES, FRAME_MS, Final, Interim, RecognitionEvent, UtteranceEnd
from dialgraph.telephony.speech.cloud_turns import CloudTurnRule, CloudTurns, frame_voiced
from tests.speech.conftest import needs_offline
from tests.speech.test_offline_turns import TrackedWorkers, _settle, _trim

pytestmark = [
    needs_offline,
    pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime"),
]
RULE = CloudTurnRule.of(TurnSettings(detector="smart_turn"))
ANSWER_FRAMES = 10  # Deepgram answers a Finalize 200 ms later here


async def _run(
    voice: Any, said: str, tail_ms: int, rule: CloudTurnRule = RULE
) -> tuple[CloudTurns, list[tuple[int, RecognitionEvent]], list[int], int]:
    """Push ``said`` and ``tail_ms`` of silence through a ``CloudTurns``; an interim with the
    words arrives 100 ms into the pause, and each ``Finalize`` is answered as Deepgram does
    (a final with the words, ``from_finalize``) ``ANSWER_FRAMES`` later. Returns the turns,
    its events with the frame each went out at, the frames at which it asked for
    ``Finalize``, and the frame the speech ended at."""
    from dialgraph.telephony.speech.offline_tts import render_piper
    from dialgraph.telephony.speech.turn_detector import SmartTurnDetector

    speech = silence(300) + _trim(render_piper(voice, said, variation=False))
    frames = [speech[i : i + FRAME_BYTES] for i in range(0, len(speech), FRAME_BYTES)]
    speech_end = max(n for n, f in enumerate(frames) if frame_voiced(f)) + 1
    frames += [silence(FRAME_MS)] * (tail_ms // FRAME_MS)
    pool = TrackedWorkers(1)
    events: list[tuple[int, RecognitionEvent]] = []
    finalized: list[int] = []
    pushed = 0
    try:
        turns = CloudTurns(
            rule,
            SmartTurnDetector(),
            pool,
            emit=lambda e: events.append((pushed, e)),
            finalize=lambda: finalized.append(pushed),
        )
        for pushed, frame in enumerate(frames, start=1):
            turns.hear(frame)
            if pushed == speech_end + 5:
                turns.interim(Interim(said, 0.3, speech_end * FRAME_MS / 1000))
            if pushed - ANSWER_FRAMES in finalized:
                turns.final(Final(said, 0.3, (pushed - ANSWER_FRAMES) * FRAME_MS / 1000), from_finalize=True)
            await _settle(pool)
        await turns.aclose()
    finally:
        pool.shutdown()
    return turns, events, finalized, speech_end


def _stable(events: list[tuple[int, RecognitionEvent]]) -> list[int]:
    return [at for at, e in events if isinstance(e, Interim) and e.stable]


async def test_a_finished_sentence_is_finalized_at_the_pause(piper_voice: Any) -> None:
    turns, events, finalized, end = await _run(piper_voice, "Can you help me reschedule?", 600)
    assert turns.verdicts and turns.verdicts[0] >= RULE.end_at_pause, turns.verdicts
    assert finalized == [end + RULE.pause_frames]  # scored the moment the pause reached 160 ms
    assert _stable(events)  # the session may preempt
    # the Finalize's answer is the turn's end: one round trip after the pause, not after the verdict
    assert [(at, e.speech_final) for at, e in events if isinstance(e, Final)] == [(finalized[0] + ANSWER_FRAMES, True)]


async def test_a_turn_trailing_off_into_um_is_held_until_max_wait(piper_voice: Any) -> None:
    turns, events, finalized, end = await _run(piper_voice, "I was wondering if, um", 1600)
    assert turns.verdicts and turns.verdicts[0] < RULE.hold_below, turns.verdicts
    assert finalized == [end + RULE.pause_frames]  # the words come back during the hold ...
    assert [e.speech_final for _, e in events if isinstance(e, Final)] == [False]
    # ... and the turn ends the moment the silence reaches max_wait_ms, with no second round trip
    assert [at for at, e in events if isinstance(e, UtteranceEnd)] == [end + RULE.hold_frames]
    assert not _stable(events)


async def test_without_finalize_at_the_pause_a_held_turn_is_finalized_at_max_wait(piper_voice: Any) -> None:
    rule = CloudTurnRule.of(TurnSettings(detector="smart_turn", finalize_at_pause=False))
    turns, events, finalized, end = await _run(piper_voice, "I was wondering if, um", 1600, rule)
    assert turns.verdicts and turns.verdicts[0] < RULE.hold_below, turns.verdicts
    assert finalized == [end + RULE.hold_frames]  # only when the silence reached max_wait_ms
    assert [(at, e.speech_final) for at, e in events if isinstance(e, Final)] == [(finalized[0] + ANSWER_FRAMES, True)]
