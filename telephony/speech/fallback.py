"""Fallback wrappers: same interfaces, a second provider behind the first.

``FallbackRecognizer``: the primary stream must open within ``connect_timeout_s`` (when it
exposes a ``ready`` event, as ``DeepgramStream`` does) and must not fail; otherwise the
call's stream switches to the fallback, which first gets the audio pushed since the last
``Final``, so the words in flight are recognised again rather than lost.

``FallbackSynthesizer``: the primary must produce audio within ``first_audio_timeout_s``
of being handed a phrase, and must not fail. Otherwise the fallback speaks from the first
phrase the primary did not finish (that phrase restarts from its beginning). Without a
fallback, or if it fails too, the pre-rendered ``apology`` plays (see ``prepare``) and the
reply ends; the call goes on either way. The flow's voice, model and language go to both, so
a cloud fallback (ElevenLabs over HTTP) keeps the flow's voice; an offline one ignores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import structlog

from dialgraph.telephony.speech.base import (
    AudioChunk,
    Final,
    RecognitionEvent,
    RecognitionStream,
    SpeechRecognizer,
    SpeechSynthesizer,
)

log = structlog.get_logger(__name__)


class FallbackRecognizer:
    def __init__(
        self,
        primary: SpeechRecognizer,
        fallback: SpeechRecognizer | None,
        *,
        connect_timeout_s: float = 3.0,
        max_buffer_s: float = 30.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.connect_timeout_s = connect_timeout_s
        self.max_buffer_bytes = int(max_buffer_s * 8000)
        self.capabilities = primary.capabilities

    def stream(self, *, language: str | None = None) -> FallbackRecognitionStream:
        return FallbackRecognitionStream(self, language)

    async def aclose(self) -> None:
        await self.primary.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()


class FallbackRecognitionStream:
    def __init__(self, owner: FallbackRecognizer, language: str | None) -> None:
        self._owner = owner
        self._language = language
        self.active: RecognitionStream = owner.primary.stream(language=language)
        self.switched = False
        self._since_final = bytearray()
        self._ended = False
        self._closed = asyncio.Event()

    def push(self, audio: bytes) -> None:
        self._since_final += audio
        excess = len(self._since_final) - self._owner.max_buffer_bytes
        if excess > 0:
            del self._since_final[:excess]
        self.active.push(audio)

    async def end_input(self) -> None:
        self._ended = True
        await self.active.end_input()

    async def aclose(self) -> None:
        self._closed.set()
        await self.active.aclose()

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecognitionEvent]:
        try:
            ready = getattr(self.active, "ready", None)
            if ready is not None:
                await self._wait_ready(ready)
            async for event in self.active:
                if isinstance(event, Final):
                    self._since_final.clear()
                yield event
            return
        except Exception as exc:  # connect timeout, ProviderError, anything the primary raised
            if self._closed.is_set():
                return
            if self._owner.fallback is None:
                raise
            log.warning("ASR primary failed, switching to fallback", error=repr(exc))
        await self._switch()
        async for event in self.active:
            yield event

    async def _wait_ready(self, ready: asyncio.Event) -> None:
        waits = {asyncio.ensure_future(ready.wait()), asyncio.ensure_future(self._closed.wait())}
        try:
            done, _ = await asyncio.wait(
                waits, timeout=self._owner.connect_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if not done:
            raise TimeoutError(f"ASR primary not connected within {self._owner.connect_timeout_s} s")

    async def _switch(self) -> None:
        assert self._owner.fallback is not None
        with contextlib.suppress(Exception):
            await self.active.aclose()
        self.active = self._owner.fallback.stream(language=self._language)
        self.switched = True
        if self._since_final:
            self.active.push(bytes(self._since_final))
        if self._ended:
            await self.active.end_input()


class _PhraseTee:
    """Lets two readers (primary, then fallback) read one phrase stream from any index.
    Pulls from the source run in their own task, so cancelling a reader (the primary being
    torn down) never cancels, and so never breaks, the source."""

    def __init__(self, source: AsyncIterable[str]) -> None:
        self._it = source.__aiter__()
        self.items: list[str] = []
        self.pulled_at: list[float] = []
        self.done = False
        self.error: BaseException | None = None
        self._pull_task: asyncio.Task[Any] | None = None

    async def reader(self, start: int) -> AsyncIterator[str]:
        i = start
        while True:
            if i < len(self.items):
                yield self.items[i]
                i += 1
                continue
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            if self._pull_task is None:
                self._pull_task = asyncio.get_running_loop().create_task(self._pull())
            await asyncio.shield(self._pull_task)

    async def _pull(self) -> None:
        try:
            phrase = await self._it.__anext__()
            if phrase.strip():
                self.items.append(phrase)
                self.pulled_at.append(time.monotonic())
        except StopAsyncIteration:
            self.done = True
        except Exception as exc:
            self.done, self.error = True, exc
        finally:
            self._pull_task = None

    async def aclose(self) -> None:
        task = self._pull_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class FallbackSynthesizer:
    def __init__(
        self,
        primary: SpeechSynthesizer,
        fallback: SpeechSynthesizer | None,
        *,
        apology: str = "Sorry, I'm having trouble speaking right now.",
        first_audio_timeout_s: float = 4.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.apology = apology
        self.first_audio_timeout_s = first_audio_timeout_s
        self.apology_audio = b""
        self.capabilities = primary.capabilities

    async def prepare(self) -> None:
        """Render the apology once (primary, else fallback) so it can play when both fail."""
        for synth in (self.primary, self.fallback):
            if synth is None:
                continue
            try:
                chunks = [c.audio async for c in synth.synthesize(_one(self.apology))]
            except Exception as exc:
                log.warning("could not pre-render the apology", error=repr(exc))
                continue
            self.apology_audio = b"".join(chunks)
            return

    async def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        tee = _PhraseTee(phrases)
        done = 0  # phrases the primary finished (last chunk handed out)
        try:
            try:
                async for chunk in self._guarded(tee, voice, language, model):
                    if chunk.last:
                        done = chunk.phrase + 1
                    yield chunk
                return
            except Exception as exc:
                if tee.error is not None and exc is tee.error:
                    raise
                log.warning("TTS primary failed, switching to fallback", error=repr(exc), phrase=done)
            if self.fallback is not None:
                base = done
                try:
                    async for chunk in self.fallback.synthesize(
                        tee.reader(base), voice=voice, language=language, model=model
                    ):
                        yield AudioChunk(chunk.audio, chunk.phrase + base, chunk.last)
                        if chunk.last:
                            done = chunk.phrase + base + 1
                    return
                except Exception as exc:
                    if tee.error is not None and exc is tee.error:
                        raise
                    log.error("TTS fallback failed too", error=repr(exc))
            if self.apology_audio:
                yield AudioChunk(self.apology_audio, done, last=True)
        finally:
            await tee.aclose()

    async def _guarded(
        self, tee: _PhraseTee, voice: str | None, language: str | None, model: str | None
    ) -> AsyncIterator[AudioChunk]:
        """The primary's chunks; raises TimeoutError when a phrase waits too long for audio."""
        it = self.primary.synthesize(tee.reader(0), voice=voice, language=language, model=model).__aiter__()
        limit = self.first_audio_timeout_s
        finished, last_audio = 0, time.monotonic()
        next_task: asyncio.Task[AudioChunk] | None = None
        try:
            while True:
                next_task = asyncio.ensure_future(it.__anext__())
                while True:
                    done, _ = await asyncio.wait({next_task}, timeout=limit / 4)
                    if done:
                        break
                    if len(tee.items) > finished:  # a phrase is waiting for audio
                        since = max(last_audio, tee.pulled_at[finished])
                        if time.monotonic() - since > limit:
                            raise TimeoutError(f"no audio from the primary TTS for {limit} s")
                try:
                    chunk = next_task.result()
                except StopAsyncIteration:
                    return
                finally:
                    next_task = None
                last_audio = time.monotonic()
                if chunk.last:
                    finished = chunk.phrase + 1
                yield chunk
        finally:
            if next_task is not None:
                next_task.cancel()
                with contextlib.suppress(BaseException):
                    await next_task
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.primary.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()


async def _one(text: str) -> AsyncIterator[str]:
    yield text
