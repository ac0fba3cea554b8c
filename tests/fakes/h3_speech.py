"""In-process speech fakes that implement the ``telephony.speech`` protocols.

``WordCodeRecognizer`` understands the word-coded audio of ``tests.fakes.deepgram_server``
(one mu-law byte value per vocabulary word), so it can stand in for a real recognizer, e.g.
as the fallback behind a failing Deepgram. ``ToneSynthesizer`` renders each phrase as
deterministic bytes distinct from the ElevenLabs fake's, so a test can tell whose voice
the caller heard.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from telephony.speech import (
    AudioChunk,
    Final,
    RecognitionEvent,
    RecognizerCapabilities,
    SpeechStarted,
    SynthesizerCapabilities,
    UtteranceEnd,
)
from tests.fakes.deepgram_server import RATE, SILENCE, WORD_BASE

_END = object()


class WordCodeStream:
    def __init__(self, vocab: list[str], endpoint_s: float) -> None:
        self._vocab = vocab
        self._endpoint = int(endpoint_s * RATE)
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._t = 0
        self._run: int | None = None
        self._words: list[tuple[str, float, float]] = []
        self._quiet = 0
        self._closed = False
        self.received = bytearray()

    def push(self, audio: bytes) -> None:
        if self._closed:
            return
        self.received += audio
        for value, group in itertools.groupby(audio):
            n = len(list(group))
            if value not in SILENCE:
                if value != self._run:
                    self._word_end()
                    if not self._words:
                        self._events.put_nowait(SpeechStarted(at=self._t / RATE))
                    self._run, self._run_start = value, self._t
                self._quiet = 0
            else:
                self._word_end()
                self._quiet += n
                if self._words and self._quiet >= self._endpoint:
                    self._final()
            self._t += n

    def _word_end(self) -> None:
        if self._run is not None:
            self._words.append((self._vocab[self._run - WORD_BASE], self._run_start / RATE, self._t / RATE))
            self._run = None

    def _final(self) -> None:
        words, self._words = self._words, []
        self._events.put_nowait(Final(" ".join(w for w, _, _ in words), words[0][1], words[-1][2], speech_final=True))
        self._events.put_nowait(UtteranceEnd(last_word_end=words[-1][2]))

    async def end_input(self) -> None:
        self._word_end()
        if self._words:
            self._final()
        self._closed = True
        self._events.put_nowait(_END)

    async def aclose(self) -> None:
        self._closed = True
        self._events.put_nowait(_END)

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecognitionEvent]:
        while (item := await self._events.get()) is not _END:
            yield item
        self._events.put_nowait(_END)


class WordCodeRecognizer:
    capabilities = RecognizerCapabilities(streaming=True, interim_results=False, vad_events=True)

    def __init__(self, vocab: list[str], *, endpoint_s: float = 0.3) -> None:
        self.vocab = vocab
        self.endpoint_s = endpoint_s
        self.streams: list[WordCodeStream] = []

    def stream(self, *, language: str | None = None) -> WordCodeStream:
        s = WordCodeStream(self.vocab, self.endpoint_s)
        self.streams.append(s)
        return s

    async def aclose(self) -> None:
        pass


def tone_audio(text: str) -> bytes:
    """What ``ToneSynthesizer`` 'says' for ``text`` (never equal to the ElevenLabs fake's)."""
    return b"".join(bytes([0x90 + ord(c) % 0x30]) * 40 for c in text.strip())


class ToneSynthesizer:
    capabilities = SynthesizerCapabilities(streaming_input=True, voices=("tone",))

    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def synthesize(
        self, phrases: AsyncIterable[str], *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        index = 0
        async for phrase in phrases:
            if not phrase.strip():
                continue
            self.spoken.append(phrase)
            audio = tone_audio(phrase)
            half = len(audio) // 2
            yield AudioChunk(audio[:half], index)
            await asyncio.sleep(0)
            yield AudioChunk(audio[half:], index, last=True)
            index += 1

    async def aclose(self) -> None:
        pass
