"""Speech interfaces: what the call session needs from ASR and TTS, and nothing more.

Audio on both sides is 8 kHz mono mu-law bytes (Twilio's format), so no transcoding sits on
the production path (Deepgram takes mu-law as is; ElevenLabs emits ``ulaw_8000``).

Recognition: ``SpeechRecognizer.stream()`` opens one ``RecognitionStream`` per call. The
session ``push``es 20 ms frames (never blocks, never awaits) and async-iterates events.
Implementations build on ``stream.QueuedRecognitionStream``. ``open_stream`` opens a call's
stream in the flow's language with the flow's vocabulary (keyterms) for the recognizers
that take one (``capabilities.keyterms``: Deepgram and the fallback chain); the others get
the language alone.

Synthesis: ``SpeechSynthesizer.synthesize(phrases)`` turns an async stream of phrases into
``AudioChunk``s tagged with the phrase index, so the session can map played audio (marks)
back to text. Cancel by closing the returned iterator (``aclose()``) or cancelling the
task that iterates it: implementations must stop work and release sockets promptly.

Cloud, offline and fake implementations, and the fallback chains, all implement
these protocols and pass one contract test suite (``tests/speech/test_contract.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from dialgraph.telephony.audio import FRAME_BYTES as FRAME_BYTES
from dialgraph.telephony.audio import FRAME_MS as FRAME_MS
from dialgraph.telephony.audio import SAMPLE_RATE as SAMPLE_RATE


# --- recognition events -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Voice activity began (for barge-in). ``at`` is seconds since the stream began."""

    at: float


@dataclass(frozen=True, slots=True)
class Interim:
    """A partial hypothesis that may still change. ``stable``: the caller has paused and this
    is the recognizer's text for the whole utterance so far, what its final will say unless
    the caller goes on (the offline recognizer's speculative decode): a reply may start on
    it, held back until the turn ends with the same words (``TurnPolicy``'s ``Preempt``)."""

    text: str
    start: float
    end: float
    stable: bool = False


@dataclass(frozen=True, slots=True)
class Final:
    """A stable piece of transcript. ``speech_final`` marks the end of the caller's turn
    (endpointing); a turn may consist of several finals, the last with speech_final.

    ``language`` is what the recognizer heard this piece in, when it says so (Deepgram with
    ``language=multi``): ``"en"``, ``"hi"``, ``"hi-en"`` (both Hindi and English words), or
    another base ISO 639-1 code; None when the recognizer does not detect languages (a
    monolingual stream, offline whisper): then ``dialgraph.server.core.language.detect``
    reads the text.

    ``end`` is the end of the audio the result covers: for an endpointed result that
    includes the silence that ended the turn (Deepgram's ``endpointing``, 300 ms).
    ``last_word_end`` is where the last word ended, when the recognizer times its words
    (Deepgram); None otherwise (then the end of speech is ``end``)."""

    text: str
    start: float
    end: float
    speech_final: bool = True
    confidence: float | None = None
    language: str | None = None
    last_word_end: float | None = None


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """The recognizer saw the end of an utterance (a gap in speech) after ``last_word_end``."""

    last_word_end: float


RecognitionEvent = SpeechStarted | Interim | Final | UtteranceEnd


@dataclass(frozen=True, slots=True)
class RecognizerCapabilities:
    """What a recognizer's events include: ``Interim`` hypotheses, ``SpeechStarted``;
    ``keyterms``: its ``stream`` also takes ``keyterms`` (see ``KeytermRecognizer``)."""

    interim_results: bool
    vad_events: bool = False
    keyterms: bool = False
    turns: bool = False  # ``stream`` also takes ``turn`` (the flow's ``[turn]``): Deepgram


@runtime_checkable
class RecognitionStream(Protocol):
    ready: asyncio.Event
    """Set once audio reaches the recognizer (a cloud stream's socket is open), or once the
    stream gave up (its error then comes out of the iterator) or was closed. A fallback
    chain bounds the wait for it."""

    def push(self, audio: bytes) -> None:
        """Queue mu-law audio (any length, usually one 160-byte frame). Never blocks."""

    async def end_input(self) -> None:
        """No more audio: flush so pending speech comes out as a Final, then events end."""

    async def aclose(self) -> None:
        """Stop at once and release everything (sockets, workers). Idempotent."""

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]: ...


@runtime_checkable
class SpeechRecognizer(Protocol):
    capabilities: RecognizerCapabilities

    def stream(self, *, language: str | None = None) -> RecognitionStream:
        """Open a per-call stream. Connection happens in the background; audio pushed
        before it is ready is buffered, not lost."""

    async def aclose(self) -> None:
        """Release provider-wide resources (pools, clients)."""


class KeytermRecognizer(SpeechRecognizer, Protocol):
    """A recognizer whose streams can be primed with the flow's vocabulary (company, staff,
    product names): those words are recognised more reliably. Declared by
    ``capabilities.keyterms``."""

    def stream(self, *, language: str | None = None, keyterms: Sequence[str] = ()) -> RecognitionStream: ...


def open_stream(
    recognizer: SpeechRecognizer,
    *,
    language: str | None = None,
    keyterms: Sequence[str] = (),
    turn: object | None = None,
) -> RecognitionStream:
    """A call's stream in ``language`` (a flow language: en, en-IN, hi, hi-en), primed with
    ``keyterms`` when ``recognizer`` takes them, and taking the flow's end-of-turn settings
    ``turn`` (``server.core.flow_config.TurnSettings``, not imported: this module is pure)
    when it does; a recognizer without either gets the language alone."""
    options: dict[str, Any] = {"language": language}
    if keyterms and recognizer.capabilities.keyterms:
        options["keyterms"] = tuple(keyterms)
    if turn is not None and recognizer.capabilities.turns:
        options["turn"] = turn
    stream: RecognitionStream = cast(Any, recognizer).stream(**options)  # the options its capabilities declare
    return stream


# --- synthesis -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mu-law 8 kHz audio belonging to phrase number ``phrase`` (0-based, in input order).
    ``last`` is True on the final chunk of that phrase (it may carry no audio)."""

    audio: bytes
    phrase: int
    last: bool = False


@runtime_checkable
class SpeechSynthesizer(Protocol):
    def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        """Audio for each phrase, in order, starting as soon as the first phrase arrives.
        ``voice`` and ``model`` are provider names (a flow's ``voice`` / ``tts_model``);
        None or blank means the provider's configured default. A provider with a single
        voice or model ignores them."""

    async def aclose(self) -> None:
        """Release provider-wide resources."""


class ProviderError(Exception):
    """A speech or model provider failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, provider: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable


# --- voice activity ------------------------------------------------------------------------
@runtime_checkable
class VoiceActivityDetector(Protocol):
    """Per-call, stateful. Fed every inbound 20 ms mu-law frame on the event loop, so an
    implementation must cost well under a millisecond a frame."""

    def speech_probability(self, frame: bytes) -> float:
        """Probability in [0, 1] that ``frame`` (160 bytes mu-law) holds speech."""

    def reset(self) -> None:
        """Forget state (e.g. after a long gap)."""


def prefer_low_latency(stream: object, on: bool) -> None:
    """Ask a stream that batches audio (Deepgram: ``chunk_ms``) to send every frame at once
    (``on``: while the agent holds the floor, when the first words of an interruption must
    come back fast: a batched frame holds a word's end back by up to a frame) or to batch
    again (the caller holds the floor: fewer messages per call-second). Streams that send
    each frame anyway ignore it."""
    hint = getattr(stream, "prefer_low_latency", None)
    if hint is not None:
        hint(on)
