"""Turn-taking: who holds the floor, as a pure state machine (events in, actions out).

No asyncio, no clock: times come in with the events (seconds on the stream's timeline,
e.g. Twilio's media timestamp / 1000), so tests replay timelines exactly.

States:

* ``LISTENING`` -- the caller has the floor. ASR finals accumulate; the turn ends on a
  ``Final`` with ``speech_final`` (endpointing) or an ``UtteranceEnd`` after finals, and
  the policy answers ``StartTurn(text)`` and moves to ``THINKING``.
* ``THINKING`` -- the agent's turn has begun (a caller turn, the greeting, DTMF) but no
  audio has been sent yet.
* ``AGENT_SPEAKING`` -- agent audio is going out; back to ``LISTENING`` on playback done.

Barge-in (``THINKING`` or ``AGENT_SPEAKING``): the caller's speech must last at least
``barge_in_min_ms`` -- measured by the VAD run or by the ASR's word timings, whichever is
longer -- and, when ``barge_in_min_words > 0``, an interim or final must hold that many
words (so "mm-hm" does not interrupt). Then ``BargeIn`` (the session clears, cancels, drops
queued audio, bumps its generation) and the floor returns to the caller. Speech during
the agent's turn that never qualifies (a backchannel) is dropped, not taken as a turn.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dialgraph.telephony.speech.base import Final, Interim, RecognitionEvent, SpeechStarted, UtteranceEnd


class TurnState(enum.Enum):
    LISTENING = "listening"
    THINKING = "thinking"
    AGENT_SPEAKING = "agent_speaking"


@dataclass(frozen=True, slots=True)
class StartTurn:
    """The caller finished a turn: run the graph on ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller interrupts: clear Twilio's buffer, cancel TTS and the graph run, drop
    queued audio, bump the generation, record what was heard."""


Action = StartTurn | BargeIn
BARGE_IN = BargeIn()
_NONE: tuple[Action, ...] = ()


def _words(text: str) -> int:
    return len(text.split())


class TurnPolicy:
    """One per call. ``vad`` runs per 20 ms frame, so it is kept to a few comparisons."""

    def __init__(
        self,
        *,
        barge_in_min_ms: int = 200,
        barge_in_min_words: int = 0,
        speech_threshold: float = 0.5,
        hangover_ms: int = 300,
        frame_ms: int = 20,
    ) -> None:
        self.min_speech_s = barge_in_min_ms / 1000
        self.min_words = barge_in_min_words
        self.threshold = speech_threshold
        self.hangover_s = hangover_ms / 1000
        self.frame_s = frame_ms / 1000
        self.state = TurnState.LISTENING
        self._pending: list[str] = []  # finals of the caller's current turn
        self._run_start: float | None = None  # VAD speech run
        self._last_speech = 0.0
        self._qualified = False  # speech long enough for barge-in, since the last utterance end
        self._words = 0  # words of the current utterance heard during the agent's turn

    # --- inputs -------------------------------------------------------------------------------
    def vad(self, at: float, probability: float) -> BargeIn | None:
        """One frame's speech probability at stream time ``at`` (start of the frame)."""
        if probability >= self.threshold:
            if self._run_start is None or at - self._last_speech > self.hangover_s:
                self._run_start = at
            self._last_speech = at
            if not self._qualified and at + self.frame_s - self._run_start + 1e-6 >= self.min_speech_s:
                self._qualified = True
                if self.state is not TurnState.LISTENING and self._maybe_barge_in():
                    return BARGE_IN
        return None

    def recognition(self, event: RecognitionEvent) -> tuple[Action, ...]:
        """An ASR event; returns the actions it triggers, in order."""
        if isinstance(event, Final):
            return self._final(event)
        if isinstance(event, Interim):
            if self.state is TurnState.LISTENING or not event.text.strip():
                return _NONE
            self._note_speech(event.text, event.end - event.start)
            return (BARGE_IN,) if self._maybe_barge_in() else _NONE
        if isinstance(event, UtteranceEnd):
            if self.state is TurnState.LISTENING:
                return self._end_turn()
            self._reset_utterance()  # a backchannel ended without qualifying
            return _NONE
        if isinstance(event, SpeechStarted):
            return _NONE  # onset alone proves nothing; duration comes from the VAD or word timings
        return _NONE

    def agent_turn_started(self) -> None:
        """The agent's turn began without a caller turn (greeting, DTMF, a call signal)."""
        if self.state is TurnState.LISTENING:
            self.state = TurnState.THINKING
            self._reset_utterance()

    def agent_audio_started(self) -> None:
        """The first frame of the agent's reply went out."""
        if self.state is TurnState.THINKING:
            self.state = TurnState.AGENT_SPEAKING

    def playback_done(self) -> None:
        """The reply finished playing (last mark echoed) or produced no audio at all."""
        if self.state is not TurnState.LISTENING:
            self.state = TurnState.LISTENING
            self._reset_utterance()

    # --- internals ----------------------------------------------------------------------------
    def _final(self, event: Final) -> tuple[Action, ...]:
        text = event.text.strip()
        if self.state is not TurnState.LISTENING:
            if not text:
                return _NONE
            self._note_speech(text, event.end - event.start)
            if not self._maybe_barge_in():
                if event.speech_final:
                    self._reset_utterance()  # backchannel: dropped
                return _NONE
            # The final that interrupted also opens the caller's turn.
            self._pending.append(text)
            return (BARGE_IN, *self._end_turn()) if event.speech_final else (BARGE_IN,)
        if text:
            self._pending.append(text)
        return self._end_turn() if event.speech_final else _NONE

    def _note_speech(self, text: str, duration_s: float) -> None:
        self._words = max(self._words, _words(text))
        if duration_s + 1e-9 >= self.min_speech_s:
            self._qualified = True

    def _maybe_barge_in(self) -> bool:
        if not self._qualified or self._words < self.min_words:
            return False
        self.state = TurnState.LISTENING
        self._pending.clear()
        self._words = 0
        return True

    def _end_turn(self) -> tuple[Action, ...]:
        if not self._pending:
            return _NONE
        text = " ".join(self._pending)
        self._pending.clear()
        self.state = TurnState.THINKING
        self._reset_utterance()
        return (StartTurn(text),)

    def _reset_utterance(self) -> None:
        self._qualified = False
        self._words = 0
