"""A scripted call: recognizer, synthesizer and turn runner that answer at once from a
script, for the media-path bench and for whole calls asserted message by message.

- ``ScriptedRecognizer``: a stream emits scripted events once the session has pushed a
  given number of 20 ms frames (``repeat_every`` plays the script again and again).
- ``ScriptedSynthesizer``: every byte of phrase number ``serial`` is ``phrase_byte(serial)``,
  so whoever receives the audio can tell which phrase (and which reply) it belongs to.
- ``ScriptedRunner``: a ``TurnRunner`` answering from a table keyed by the caller's text,
  digits or signal, recording every input and every heard text.

With all three, what a server spends on a call is its own media path: no model, no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.turns import CallerDigits, CallerInput, CallerText, CallSignal, RunnerEvent, TextChunk
from dialgraph.telephony.audio import FRAME_BYTES
from dialgraph.telephony.simulator.text_speech import PhraseSynthesizer
from dialgraph.telephony.speech.base import RecognitionEvent, RecognizerCapabilities
from dialgraph.telephony.speech.stream import QueuedRecognitionStream


class ScriptedRecognitionStream(QueuedRecognitionStream):
    def __init__(
        self, script: Sequence[tuple[int, RecognitionEvent]], *, repeat_every: int | None, keep_audio: bool
    ) -> None:
        super().__init__()
        self._script = sorted(script, key=lambda item: item[0])
        self._repeat = repeat_every
        self._base = 0
        self._next = 0
        self._bytes = 0
        self._keep = keep_audio
        self.audio = bytearray()

    @property
    def frames(self) -> int:
        return self._bytes // FRAME_BYTES

    def _hear(self, audio: bytes) -> None:
        if self._keep:
            self.audio += audio
        self._bytes += len(audio)
        frames = self._bytes // FRAME_BYTES
        while True:
            if self._next >= len(self._script):
                if not self._repeat or not self._script:
                    return
                self._base += self._repeat
                self._next = 0
            at, event = self._script[self._next]
            if self._base + at > frames:
                return
            self._next += 1
            self._emit(event)


class ScriptedRecognizer:
    """Every stream plays the same script: ``(after N frames pushed, event)``; with
    ``repeat_every`` the script starts again every that many frames."""

    capabilities = RecognizerCapabilities(interim_results=True, vad_events=True)

    def __init__(
        self,
        script: Sequence[tuple[int, RecognitionEvent]] = (),
        *,
        repeat_every: int | None = None,
        keep_audio: bool = True,
    ) -> None:
        self.script = list(script)
        self.repeat_every = repeat_every
        self.keep_audio = keep_audio
        self.streams: list[ScriptedRecognitionStream] = []

    def stream(self, *, language: str | None = None) -> ScriptedRecognitionStream:
        s = ScriptedRecognitionStream(self.script, repeat_every=self.repeat_every, keep_audio=self.keep_audio)
        self.streams.append(s)
        return s

    async def aclose(self) -> None:
        pass


def phrase_byte(serial: int) -> int:
    """The mu-law byte every sample of the ``serial``-th synthesized phrase carries (never
    0xFF or 0x7F, the silence codes)."""
    return 0x01 + serial % 0x7E


class ScriptedSynthesizer(PhraseSynthesizer):
    """``bytes_per_word`` bytes of ``phrase_byte(serial)`` a word, in ``chunk_bytes`` chunks."""

    def __init__(self, *, bytes_per_word: int = 800, chunk_bytes: int = 400) -> None:
        self.bytes_per_word = bytes_per_word
        self.chunk_bytes = chunk_bytes
        self.phrases: list[str] = []  # every phrase ever synthesized; index = serial

    def audio_for(self, serial: int) -> bytes:
        words = max(1, len(self.phrases[serial].split()))
        return bytes([phrase_byte(serial)]) * (words * self.bytes_per_word)

    def chunks(self, phrase: str) -> list[bytes]:
        serial = len(self.phrases)
        self.phrases.append(phrase)
        audio = self.audio_for(serial)
        return [audio[offset : offset + self.chunk_bytes] for offset in range(0, len(audio), self.chunk_bytes)]


Reply = str | Sequence[RunnerEvent]


def _events(reply: Reply) -> list[RunnerEvent]:
    """A string becomes word-sized TextChunks, like an LLM's token stream."""
    if isinstance(reply, str):
        words = reply.split(" ")
        return [TextChunk(w + (" " if i < len(words) - 1 else "")) for i, w in enumerate(words)]
    return list(reply)


def _key(turn: CallerInput) -> str:
    if isinstance(turn, CallerText):
        return turn.text
    if isinstance(turn, CallerDigits):
        return f"digits:{turn.digits}"
    assert isinstance(turn, CallSignal)
    return f"signal:{turn.kind}:{turn.detail}" if turn.detail else f"signal:{turn.kind}"


@dataclass
class ScriptedRunner:
    """Answers ``start`` with ``greeting`` and each turn from ``replies`` (keyed by caller
    text, ``digits:<d>`` or ``signal:<kind>[:<detail>]``), else ``default``."""

    greeting: Reply = "Hello and welcome to Acme Dental. How can I help?"
    replies: Mapping[str, Reply] = field(default_factory=dict)
    default: Reply = "Sorry, could you say that again?"
    event_delay_s: float = 0.0
    inputs: list[tuple[str, CallerInput | None]] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    contexts: list[CallContext] = field(default_factory=list)
    cancelled: int = 0

    async def _play(self, reply: Reply) -> AsyncIterator[RunnerEvent]:
        try:
            for event in _events(reply):
                if self.event_delay_s:
                    await asyncio.sleep(self.event_delay_s)
                yield event
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def start(self, ctx: CallContext) -> AsyncIterator[RunnerEvent]:
        self.contexts.append(ctx)
        self.inputs.append(("start", None))
        return self._play(self.greeting)

    def respond(self, ctx: CallContext, turn: CallerInput) -> AsyncIterator[RunnerEvent]:
        self.contexts.append(ctx)
        self.inputs.append(("respond", turn))
        return self._play(self.replies.get(_key(turn), self.default))

    async def record_heard(self, ctx: CallContext, heard_text: str) -> None:
        self.heard.append(heard_text)
