"""Semantic end of turn on a streaming cloud recognizer (Deepgram): pauses timed locally,
scored by the turn detector, turns ended with ``Finalize`` or held open.

Deepgram ends a turn on its own endpointing (``speech_final`` after ``endpointing`` ms of
silence, plus its result latency) and cannot tell "book me for Tuesday." from "book me
for... um". With a turn detector (``[turn] detector = "smart_turn"``) the stream times the
caller's pauses itself, on the mu-law it sends anyway, and asks the detector
(``turn_detector.py``, in the bounded speech pool) at ``pause_ms`` of silence:

* ``p >= end_above`` (``end_above`` unset: ``p >= hold_below``, see ``CloudTurnRule``): the
  turn is over. The stream sends Deepgram ``Finalize`` (the words it still holds come
  back at once as a final), puts out ``Interim(stable=True)`` with the pending text when
  the latest interim already covers the speech (the session may start its reply on it,
  held until the words are confirmed), and the final that answers the ``Finalize`` goes
  out with ``speech_final=True``: the turn ends ~pause + verdict + one round trip after the
  speech instead of Deepgram's endpointing + latency. When every word is already final it
  goes out as ``UtteranceEnd`` at once.
* ``p < hold_below`` ("I'd like to book for... um"): the turn is held. A ``speech_final``
  from Deepgram inside the hold goes out with ``speech_final=False`` (its words join the
  turn), Deepgram's ``UtteranceEnd`` is swallowed, and the turn ends only when the
  silence reaches ``max_wait_ms`` from the pause's start (then ``Finalize``/``UtteranceEnd``
  as above). Speech resuming ends the hold; a ``speech_final`` that comes in while the
  caller of a held turn is speaking again (the late tail of the held part) is demoted too.
* in between (only when ``end_above`` is set): ``Finalize`` at ``endpoint_ms`` of silence,
  unless Deepgram's own ``speech_final`` came first.

``Finalize`` goes out as the pause is scored (``finalize_at_pause``, on by default), not
after the verdict, as Pipecat finalizes Deepgram when its VAD hears the caller stop: its
answer (a final, never speech-final: the turn is the detector's to end) comes back while
the detector thinks, so an ending verdict ends the turn at once (``UtteranceEnd``) or, when
the answer is still out, with it; a hold or an endpoint ends it without another round trip.
(Deepgram's ``speech_final`` has nothing left to carry after it: a detector that fails
after one leaves the pause to ``endpoint_ms``.)

Speech resuming voids a verdict still in the pool; a ``Finalize`` already sent then comes
back as an ordinary (not speech-final) final, and is told from the answer to a later
pause's by its end (before the caller resumed). A pause is scored once, when it reaches
``pause_ms`` and some text of the turn has come back (Deepgram's results lag the audio:
a pause reached before the first interim is scored when the interim arrives), and never
while the pool is saturated (then Deepgram's endpointing decides, as without a detector).

Stable text without an ending verdict: an interim whose text equals the previous
interim's, both after the caller fell silent (at least ``pause_ms`` of it), also goes out
as ``Interim(stable=True)`` (the caller paused on this text), but only where no verdict
speaks against it: the pause was scored in the middle band (``end_above`` set) or could
not be scored (the pool was saturated); never in a held pause or while a verdict is out.
At most one stable interim per text and pause: a wasted preemptive run costs model tokens.

Cost per frame (``hear``): ``bytes.translate`` through a 256-entry table (loud sample ->
1) and ``bytes.count`` of the ones, a deque append of the frame (the detector's last 8 s),
a few integer updates. No task, future or timer per frame: the hold, the endpoint and the
``Finalize`` guard count frames (Twilio sends silence as frames too). Times are frames
pushed since the stream began, which is the stream's timeline (seconds = frames * 0.02).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from dialgraph.server.core.flow_config import TurnSettings
from dialgraph.telephony.audio import audioop
from dialgraph.telephony.speech.base import FRAME_BYTES, FRAME_MS, Final, Interim, RecognitionEvent, UtteranceEnd
from dialgraph.telephony.speech.turn_detector import WINDOW_FRAMES, TurnDetector, score_in_pool
from dialgraph.telephony.speech.workers import SpeechWorkers

log = structlog.get_logger(__name__)

# A sample is loud above ~-38 dBFS; a frame is voiced when 10 % of its samples are (speech
# at -25 dBFS has most; line noise at -50 dBFS almost none).
LOUD_LEVEL = 400
MIN_LOUD_SAMPLES = FRAME_BYTES // 10
_LOUD = bytes(1 if abs(v) >= LOUD_LEVEL else 0 for v in memoryview(audioop.ulaw2lin(bytes(range(256)), 2)).cast("h"))
RESUME_FRAMES = 2  # voiced frames in a row that count as speech (a click is not)
MIN_SPEECH_FRAMES = 5  # voiced frames in a turn before a pause is worth scoring (100 ms)
PREROLL_FRAMES = 10  # kept before the turn's first speech
COVER_SLACK_S = 0.1  # an interim ending this close to the speech's end covers it
FINALIZE_GUARD_FRAMES = 40  # 800 ms: a Finalize Deepgram never answered (nothing buffered)


def frame_voiced(frame: bytes) -> bool:
    """The per-frame energy check: enough loud samples in this mu-law frame."""
    return frame.translate(_LOUD).count(1) >= MIN_LOUD_SAMPLES


@dataclass(frozen=True, slots=True)
class CloudTurnRule:
    """``[turn]`` in frames, as the cloud path applies it. ``end_at_pause``: the score at or
    above which the turn ends at the pause: ``end_above`` when set, else ``hold_below``
    (every verdict that does not hold ends the turn). Whisper's middle band (the endpoint
    moved to ``endpoint_ms``) gains nothing here: Deepgram's own endpoint (300 ms) is already
    shorter. Measured on bench.turn_taking's 48 piper utterances, audio clock, a 300 ms
    plain endpoint standing in for Deepgram's: end of speech -> final p50 340 ms and 31/48
    cut off mid-turn without the detector; ending at the pause when p >= 0.5 (else holding)
    200 ms and 27/48; p >= 0.9: 200 ms (p90 340) and 24/48; holding alone (no early end)
    340 ms and 17/48. So the default both answers sooner and cuts off fewer callers than
    Deepgram alone; ``end_above = 0.9`` trades a few slower turns for fewer cut-offs.
    ``endpoint_frames`` applies between ``hold_below`` and ``end_at_pause``."""

    pause_frames: int
    end_at_pause: float
    hold_below: float
    hold_frames: int
    endpoint_frames: int
    finalize_at_pause: bool = True

    @classmethod
    def of(cls, turn: TurnSettings) -> CloudTurnRule:
        """From ``[turn]`` (or a flow's, merged over it)."""
        end = turn.end_above if turn.end_above is not None else turn.hold_below
        return cls(
            pause_frames=max(1, turn.pause_ms // FRAME_MS),
            end_at_pause=max(end, turn.hold_below),
            hold_below=turn.hold_below,
            hold_frames=max(1, turn.max_wait_ms // FRAME_MS),
            endpoint_frames=max(1, turn.endpoint_ms // FRAME_MS),
            finalize_at_pause=turn.finalize_at_pause,
        )


# What the current pause is waiting for.
_OPEN, _SCORING, _HOLD, _ENDPOINT, _ENDING = range(5)


class CloudTurns:
    """One call's pause timer and verdicts for a streaming recognizer (module docstring).
    ``emit`` puts an event out of the stream; ``finalize`` asks the socket to send
    ``Finalize`` (after the audio pushed so far)."""

    def __init__(
        self,
        rule: CloudTurnRule,
        detector: TurnDetector,
        workers: SpeechWorkers,
        *,
        emit: Callable[[RecognitionEvent], None],
        finalize: Callable[[], None],
    ) -> None:
        self._rule = rule
        self._detector = detector
        self._workers = workers
        self._emit = emit
        self._finalize = finalize
        self._loop = asyncio.get_running_loop()
        self._audio: deque[bytes] = deque(maxlen=WINDOW_FRAMES)
        self._carry = b""
        self._frames = 0
        self._run = 0  # voiced frames in a row
        self._voiced = 0  # voiced frames since the turn ended
        self._silent = 0  # frames since the last speech (0 while speaking)
        self._resumed_at = 0.0  # stream time the caller last resumed speaking after a pause
        self._ended_at = -1.0  # stream time the last turn's words ended (a later UtteranceEnd for them is stale)
        self._pause_no = 0  # bumped when speech resumes or the turn ends: older verdicts are void
        self._state = _OPEN
        self._held_turn = False  # a verdict held this turn
        self._verdict: asyncio.Task[float] | None = None
        self._finals: list[Final] = []  # emitted since the turn ended
        self._interim: Interim | None = None  # the latest interim since the last final
        self._prev_interim: tuple[str, int] | None = None  # its text, and the frame it came at
        self._stable_sent: str | None = None  # this pause's stable text
        self._finalizing_at: int | None = None  # frame the Finalize was asked at
        self._early_at: int | None = None  # frame a pause's Finalize went out at, not answered yet
        self.verdicts: list[float] = []  # scores of this stream, in order (tests, benches)

    # --- audio (event loop, per frame, never awaits) ---------------------------------------
    def hear(self, audio: bytes) -> None:
        if not self._carry and len(audio) == FRAME_BYTES:
            self._frame(audio)
            return
        data = self._carry + audio
        usable = len(data) - len(data) % FRAME_BYTES
        self._carry = data[usable:]
        for i in range(0, usable, FRAME_BYTES):
            self._frame(data[i : i + FRAME_BYTES])

    def _frame(self, frame: bytes) -> None:
        self._frames += 1
        self._audio.append(frame)
        if frame.translate(_LOUD).count(1) >= MIN_LOUD_SAMPLES:
            self._run += 1
            self._voiced += 1
            if self._run >= RESUME_FRAMES and self._silent:
                self._resumed()
            return
        self._run = 0
        if not self._voiced:
            if len(self._audio) > PREROLL_FRAMES:
                self._audio.popleft()
            return
        self._silent += 1
        rule, state = self._rule, self._state
        if self._silent == rule.pause_frames and state == _OPEN:
            self._score()
        elif (
            state == _HOLD
            and self._silent >= rule.hold_frames
            or state == _ENDPOINT
            and self._silent >= rule.endpoint_frames
        ):
            self._end_turn()
        elif (
            state == _ENDING
            and self._finalizing_at is not None
            and self._frames - self._finalizing_at >= FINALIZE_GUARD_FRAMES
        ):
            self._finalizing_at = None  # Deepgram had nothing buffered: what is final is the turn
            self._utterance_end()

    def _resumed(self) -> None:
        """Speech after a pause: its verdict (pending or given) no longer applies."""
        self._silent = 0
        self._resumed_at = (self._frames - self._run) * FRAME_MS / 1000
        self._pause_no += 1
        self._stable_sent = None
        self._state = _OPEN
        self._finalizing_at = None  # a Finalize in flight comes back as a plain final
        self._early_at = None
        if self._verdict is not None:
            self._verdict.cancel()
            self._verdict = None

    # --- verdicts ----------------------------------------------------------------------------
    def _has_text(self) -> bool:
        return bool(self._finals) or self._interim is not None

    def _score(self) -> None:
        if not self._has_text() or self._voiced < MIN_SPEECH_FRAMES:
            return  # scored when text arrives (``interim``/``final``), if the pause lasts
        if self._workers.pending >= self._workers.size:
            self._state = _SCORING  # not asked: Deepgram's endpointing decides this pause
            return
        self._state = _SCORING
        text = self.text()
        task = self._loop.create_task(score_in_pool(self._workers, self._detector, b"".join(self._audio), text))
        self._verdict = task
        pause = self._pause_no
        task.add_done_callback(lambda t: self._on_verdict(t, pause))
        if self._rule.finalize_at_pause and self._early_at is None:
            # The words back while the detector thinks: an ending verdict then ends the turn
            # at once instead of a round trip later; any other verdict just gets them early.
            self._early_at = self._frames
            self._finalize()

    def _on_verdict(self, task: asyncio.Task[float], pause: int) -> None:
        if self._verdict is task:
            self._verdict = None
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            log.warning("turn detector failed", error=repr(exc))
            if self._rule.finalize_at_pause:
                # the pause's Finalize took the words Deepgram's speech_final would have
                # carried: our own endpoint decides
                self._await_endpoint()
            return  # else Deepgram's endpointing decides
        if pause != self._pause_no or self._state != _SCORING:
            return  # the caller spoke again, or the turn already ended
        p, rule = task.result(), self._rule
        self.verdicts.append(p)
        if p >= rule.end_at_pause:
            self._offer_stable()
            self._end_turn()
        elif p < rule.hold_below:
            self._state = _HOLD
            self._held_turn = True
            if self._silent >= rule.hold_frames:
                self._end_turn()
        else:
            self._await_endpoint()

    def _await_endpoint(self) -> None:
        """The turn ends at ``endpoint_ms`` of silence (``_frame`` counts it), now if reached."""
        self._state = _ENDPOINT
        if self._silent >= self._rule.endpoint_frames:
            self._end_turn()

    def _end_turn(self) -> None:
        """End the turn now: ``UtteranceEnd`` when the finals cover the speech, else
        ``Finalize`` (words still interim, or not even back yet: results lag the audio)."""
        speech_end = (self._frames - self._silent) * FRAME_MS / 1000
        covered = bool(self._finals) and self._finals[-1].end + COVER_SLACK_S >= speech_end
        if self._interim is not None or not covered:
            self._state = _ENDING
            if self._early_at is not None:  # this pause's Finalize is out: its answer ends the turn
                self._finalizing_at = self._early_at
            else:
                self._finalizing_at = self._frames
                self._finalize()
        else:
            self._utterance_end()

    def _utterance_end(self) -> None:
        if self._finals:
            self._emit(UtteranceEnd(last_word_end=self._finals[-1].end))
        self._turn_over()

    def _turn_over(self) -> None:
        if self._finals:
            self._ended_at = self._finals[-1].end
        self._finals.clear()
        self._interim = None
        self._prev_interim = None
        self._stable_sent = None
        self._finalizing_at = None
        self._early_at = None
        self._state = _OPEN
        self._held_turn = False
        self._voiced = 0
        self._pause_no += 1
        if self._verdict is not None:
            self._verdict.cancel()
            self._verdict = None
        while len(self._audio) > PREROLL_FRAMES:  # the next turn's window starts afresh
            self._audio.popleft()

    def _offer_stable(self) -> None:
        """``Interim(stable=True)`` with the pending words, when the latest interim covers
        the speech so far and this pause has not offered the same text."""
        interim = self._interim
        if interim is None or self._silent == 0:
            return
        speech_end = (self._frames - self._silent) * FRAME_MS / 1000
        if interim.end + COVER_SLACK_S < speech_end or interim.text == self._stable_sent:
            return
        self._stable_sent = interim.text
        self._emit(Interim(interim.text, interim.start, interim.end, stable=True))

    def text(self) -> str:
        """The turn so far: its finals and the latest interim."""
        parts = [f.text for f in self._finals]
        if self._interim is not None:
            parts.append(self._interim.text)
        return " ".join(parts)

    # --- results (the stream hands every one over; these emit) --------------------------
    def interim(self, event: Interim) -> None:
        self._emit(event)
        prev, self._prev_interim = self._prev_interim, (event.text, self._frames)
        self._interim = event
        if self._state == _OPEN and self._silent >= self._rule.pause_frames:
            self._score()  # the pause came before this text
        if self._state == _ENDING or (
            (self._state == _ENDPOINT or (self._state == _SCORING and self._verdict is None))
            and prev is not None
            and prev[0] == event.text
            and self._silent >= self._rule.pause_frames
            and self._frames - self._silent <= prev[1]  # silent since before the previous one
        ):
            self._offer_stable()

    def final(self, event: Final, *, from_finalize: bool = False) -> None:
        """A final result (``text`` may be empty: a ``Finalize`` answered with nothing new)."""
        if from_finalize:
            if event.text and event.end <= self._resumed_at:  # the answer to a pause the caller spoke after
                from_finalize = False
                event = _with(event, speech_final=False)
            else:
                self._early_at = None
        ending = self._state == _ENDING and self._finalizing_at is not None
        if ending and (from_finalize or event.speech_final):  # the answer, or endpointing got there first
            self._finalizing_at = None
            if event.text:
                event = _with(event, speech_final=True)
                self._finals.append(event)
                self._emit(event)
            self._utterance_end_after_final()
            return
        if not event.text:
            return
        if event.speech_final and (from_finalize or self._mid_turn(event.end)):
            event = _with(event, speech_final=False)  # the detector's to end, not the Finalize's
        self._finals.append(event)
        self._interim = None
        self._prev_interim = None
        self._emit(event)
        if event.speech_final:
            self._turn_over()
        elif self._state == _OPEN and self._silent >= self._rule.pause_frames:
            self._score()

    def _utterance_end_after_final(self) -> None:
        """The turn ended with the ``Finalize``'s final (already out, speech-final) or, when
        it brought no words, with what was final before it."""
        if self._finals and not self._finals[-1].speech_final:
            self._emit(UtteranceEnd(last_word_end=self._finals[-1].end))
        self._turn_over()

    def _mid_turn(self, heard_until: float) -> bool:
        """Deepgram's end of an utterance that ended at ``heard_until`` is not the turn's:
        this pause is held, or the caller of a held turn has spoken since (a late result)."""
        if self._state == _HOLD:
            return True
        return self._held_turn and (
            self._silent < self._rule.pause_frames or heard_until < self._resumed_at - COVER_SLACK_S
        )

    def utterance_end(self, event: UtteranceEnd) -> None:
        if self._mid_turn(event.last_word_end) or (not self._finals and event.last_word_end <= self._ended_at):
            return  # the hold or the next pause's verdict decides / a turn that already ended
        self._emit(event)
        if self._finals:
            self._turn_over()

    async def aclose(self) -> None:
        if self._verdict is not None:
            self._verdict.cancel()
            await asyncio.gather(self._verdict, return_exceptions=True)
            self._verdict = None


def _with(event: Final, *, speech_final: bool) -> Final:
    return dataclasses.replace(event, speech_final=speech_final)
