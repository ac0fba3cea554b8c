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
words. Then ``BargeIn`` (the session clears, cancels, drops queued audio, bumps its
generation) and the floor returns to the caller. Speech during the agent's turn that never
qualifies is dropped, not taken as a turn.

Backchannels ("mm-hmm", "yeah", "okay", "haan", "achha", "ji", "theek hai"): with
``backchannel_words`` (empty: off, the rule above alone) speech that qualified is judged by
its words. The text of the utterance so far (its finals heard during the agent's turn and
the latest interim) decides: the first interim or final holding a word that is not a
backchannel word barges in at once; while every word is a backchannel word the agent goes
on; speech that goes on for ``backchannel_max_ms`` with no new text from the recognizer
barges in anyway (a long utterance is not a backchannel, and a recognizer that fell behind
must not hold the floor). A backchannel's final is dropped like any speech that never
qualified. Words are compared lower-case, punctuation dropped, hyphens and apostrophes
ignored ("Mm-hmm." is "mmhmm") and a letter repeated three times or more counted twice
("hmmm" is "hmm", "haaan" is "haan"), in any script (Devanagari "हाँ" works as written).
The text rule needs a recognizer that gives text while the caller speaks (interim results);
the composition root leaves it off for one that does not.

Preemption: an ``Interim`` marked ``stable`` while the caller holds the floor (they paused;
the recognizer's text for the turn so far) answers ``Preempt(text)``: the session may start
the reply now and hold its audio until ``StartTurn`` confirms the same words.

Each ``StartTurn`` carries the languages its finals were heard in (``Final.language``, when
the recognizer says), in order, without repeats.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from dialgraph.telephony.speech.base import Final, Interim, RecognitionEvent, SpeechStarted, UtteranceEnd


class TurnState(enum.Enum):
    LISTENING = "listening"
    THINKING = "thinking"
    AGENT_SPEAKING = "agent_speaking"


@dataclass(frozen=True, slots=True)
class StartTurn:
    """The caller finished a turn: run the graph on ``text``. ``languages``: what the
    recognizer said its finals were in (empty when it does not say)."""

    text: str
    languages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller interrupts: clear Twilio's buffer, cancel TTS and the graph run, drop
    queued audio, bump the generation, record what was heard."""


@dataclass(frozen=True, slots=True)
class Preempt:
    """The caller paused on ``text`` (the turn so far): a reply may start, held back until
    the turn ends with the same words."""

    text: str


Action = StartTurn | BargeIn | Preempt
BARGE_IN = BargeIn()
_NONE: tuple[Action, ...] = ()
_EPS = 1e-6

_JOINED = dict.fromkeys(map(ord, "-\u2010\u2011\u00ad'\u2019"))  # hyphens and apostrophes: "mm-hmm" -> "mmhmm"
_REPEATS = re.compile(r"(.)\1{2,}")


def words_of(text: str) -> list[str]:
    """``text``'s words as backchannels are compared: lower-case, punctuation dropped (any
    script: Devanagari vowel signs are letters here), hyphens and apostrophes ignored, a
    character repeated three times or more counted twice."""
    text = text.lower().translate(_JOINED)
    if not text.isascii():
        text = "".join(c if c.isalnum() or unicodedata.category(c)[0] == "M" else " " for c in text)
    else:
        text = "".join(c if c.isalnum() else " " for c in text)
    return [_REPEATS.sub(r"\1\1", w) for w in text.split()]


def backchannel_vocabulary(phrases: Iterable[str]) -> frozenset[str]:
    """The words of ``phrases`` ("haan ji", "theek hai", "mm-hmm") as ``words_of`` gives them."""
    return frozenset(w for phrase in phrases for w in words_of(phrase))


def _words(text: str) -> int:
    return len(text.split())


class TurnPolicy:
    """One per call. ``vad`` runs per 20 ms frame, so it is kept to a few comparisons;
    the text of an interim or final is read once per ASR event."""

    def __init__(
        self,
        *,
        barge_in_min_ms: int = 200,
        barge_in_min_words: int = 0,
        backchannel_words: Iterable[str] = (),
        backchannel_max_ms: int = 800,
        speech_threshold: float = 0.5,
        hangover_ms: int = 300,
        frame_ms: int = 20,
    ) -> None:
        self.min_speech_s = barge_in_min_ms / 1000
        self.min_words = barge_in_min_words
        self.backchannels = backchannel_vocabulary(backchannel_words)
        self.backchannel_max_s = backchannel_max_ms / 1000
        self.threshold = speech_threshold
        self.hangover_s = hangover_ms / 1000
        self.frame_s = frame_ms / 1000
        self.state = TurnState.LISTENING
        self._pending: list[str] = []  # finals of the caller's current turn
        self._languages: list[str] = []  # the languages of those finals, when the recognizer says
        self._run_start: float | None = None  # VAD speech run
        self._last_speech = 0.0
        self._qualified = False  # speech long enough for barge-in, since the last utterance end
        self._words = 0  # words of the current utterance heard during the agent's turn
        # The current utterance during the agent's turn, for the backchannel rule:
        self._held: list[str] = []  # its finals
        self._held_languages: list[str] = []
        self._interim = ""  # the latest interim after them
        self._only_backchannels: bool | None = None  # its words so far: None (no text yet)
        self._text_at = float("-inf")  # VAD time when its latest text came

    # --- inputs -------------------------------------------------------------------------------
    def vad(self, at: float, probability: float) -> BargeIn | None:
        """One frame's speech probability at stream time ``at`` (start of the frame)."""
        if probability >= self.threshold:
            if self._run_start is None or at - self._last_speech > self.hangover_s:
                self._run_start = at
            self._last_speech = at
            if not self._qualified:
                if at + self.frame_s - self._run_start + _EPS >= self.min_speech_s:
                    self._qualified = True
                    if self.state is not TurnState.LISTENING and self._maybe_barge_in():
                        return BARGE_IN
            elif (
                self.backchannels
                and self.state is not TurnState.LISTENING
                and at + self.frame_s - max(self._run_start, self._text_at) + _EPS >= self.backchannel_max_s
            ):
                self._barge_in()  # speaking on with no new words: not a backchannel
                return BARGE_IN
        return None

    def recognition(self, event: RecognitionEvent) -> tuple[Action, ...]:
        """An ASR event; returns the actions it triggers, in order."""
        if isinstance(event, Final):
            return self._final(event)
        if isinstance(event, Interim):
            text = event.text.strip()
            if self.state is TurnState.LISTENING:
                return (Preempt(" ".join([*self._pending, text])),) if event.stable and text else _NONE
            if not text:
                return _NONE
            self._note_speech(text, event.end - event.start)
            self._interim = text
            self._judge()
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
            self._held.append(text)
            if event.language:
                self._held_languages.append(event.language)
            self._interim = ""
            self._judge()
            if not self._maybe_barge_in():
                if event.speech_final:
                    self._reset_utterance()  # a backchannel, or too short: dropped
                return _NONE
            # The final that interrupted (with the utterance's earlier finals) opens the turn.
            return (BARGE_IN, *self._end_turn()) if event.speech_final else (BARGE_IN,)
        if text:
            self._pending.append(text)
            if event.language:
                self._languages.append(event.language)
        return self._end_turn() if event.speech_final else _NONE

    def _note_speech(self, text: str, duration_s: float) -> None:
        self._words = max(self._words, _words(" ".join([*self._held, text])))
        if duration_s + 1e-9 >= self.min_speech_s:
            self._qualified = True

    def _judge(self) -> None:
        """The backchannel verdict on the utterance's text so far (when the rule is on)."""
        if not self.backchannels:
            return
        words = [w for part in (*self._held, self._interim) for w in words_of(part)]
        if not words:
            return
        self._only_backchannels = all(w in self.backchannels for w in words)
        self._text_at = self._last_speech if self._run_start is not None else float("-inf")

    def _maybe_barge_in(self) -> bool:
        if not self._qualified or self._words < self.min_words:
            return False
        if self.backchannels and self._only_backchannels is not False:
            return False  # no words yet, or only backchannel words: the agent goes on
        self._barge_in()
        return True

    def _barge_in(self) -> None:
        self.state = TurnState.LISTENING
        self._pending = self._held  # the utterance's finals so far begin the caller's turn
        self._languages = self._held_languages
        self._held, self._held_languages = [], []
        self._interim = ""
        self._words = 0
        self._only_backchannels = None
        self._text_at = float("-inf")

    def _end_turn(self) -> tuple[Action, ...]:
        if not self._pending:
            return _NONE
        text = " ".join(self._pending)
        languages = tuple(dict.fromkeys(self._languages))
        self._pending.clear()
        self._languages.clear()
        self.state = TurnState.THINKING
        self._reset_utterance()
        return (StartTurn(text, languages),)

    def _reset_utterance(self) -> None:
        self._qualified = False
        self._words = 0
        self._held, self._held_languages = [], []
        self._interim = ""
        self._only_backchannels = None
        self._text_at = float("-inf")
