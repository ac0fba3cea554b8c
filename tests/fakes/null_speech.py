"""Test fakes: a recognizer that hears nothing and a synthesizer that says nothing.

For tests that build the whole app but never stream audio (webhooks, admin API). They
implement the ``telephony.speech`` protocols so ``create_app`` needs no provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

from telephony.speech import AudioChunk, RecognitionEvent, RecognizerCapabilities, SynthesizerCapabilities


class NullRecognitionStream:
    """Accepts audio, emits no events, ends when input ends or it is closed."""

    def __init__(self) -> None:
        self._ended = asyncio.Event()

    def push(self, audio: bytes) -> None:
        pass

    async def end_input(self) -> None:
        self._ended.set()

    async def aclose(self) -> None:
        self._ended.set()

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RecognitionEvent]:
        await self._ended.wait()
        return
        yield  # pragma: no cover - makes this an async generator


class NullRecognizer:
    capabilities = RecognizerCapabilities(streaming=True, interim_results=False)

    def stream(self, *, language: str | None = None) -> NullRecognitionStream:
        return NullRecognitionStream()

    async def aclose(self) -> None:
        pass


class NullSynthesizer:
    """One empty, final chunk per phrase."""

    capabilities = SynthesizerCapabilities(streaming_input=True)

    async def synthesize(
        self, phrases: AsyncIterable[str], *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        index = 0
        async for _phrase in phrases:
            yield AudioChunk(b"", index, last=True)
            index += 1

    async def aclose(self) -> None:
        pass
