"""Fallback chains: the same interfaces over a list of providers, best first.

Each chain keeps a ``ProviderHealth``: a provider that failed is tried last for a while and
probed in the background until it answers again (``health.py``), so a dead primary costs
one call its timeout, not every call. Every provider stays in the order: an outage of all
but one still gives a voice and an ear, never dead air.

``FallbackRecognizer``: every provider but the last must open its stream (``ready``)
within ``connect_timeout_s`` and must not fail; otherwise the call's stream switches to the
next, which first gets the audio pushed since the last ``Final``, so the words in flight
are recognised again rather than lost. The call's language and keyterms go to every
provider (``base.open_stream``: one that takes no keyterms, offline whisper, gets the
language alone).

``FallbackSynthesizer``: every provider but the last (every one, once an apology is
ready) must produce audio within ``first_audio_timeout_s`` of being handed a phrase, and
must not fail. Otherwise the next
speaks from the first phrase the failed one did not finish (that phrase restarts from its
beginning). If the last fails too, the pre-rendered ``apology`` plays (see ``prepare``)
and the reply ends; the call goes on either way. The flow's voice, model and language go to
every provider, so a cloud fallback (ElevenLabs over HTTP) keeps the flow's voice; an
offline one ignores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence

import structlog

from dialgraph.server.core.flow_config import TurnSettings
from dialgraph.server.core.live import ProviderFailed, hub
from dialgraph.telephony.speech.base import (
    SAMPLE_RATE,
    AudioChunk,
    Final,
    ProviderError,
    RecognitionEvent,
    RecognitionStream,
    SpeechRecognizer,
    SpeechSynthesizer,
    open_stream,
    prefer_low_latency,
)
from dialgraph.telephony.speech.health import ProviderHealth
from dialgraph.telephony.speech.phrase_tee import PhraseTee
from dialgraph.telephony.speech.tasks import cancel_and_wait

log = structlog.get_logger(__name__)


# --- recognition ---------------------------------------------------------------------------
async def probe_recognizer(recognizer: SpeechRecognizer) -> None:
    """Open a stream and end it without audio: raises unless it ends cleanly."""
    stream = recognizer.stream()
    try:
        await stream.end_input()
        async for _ in stream:
            pass
    finally:
        await stream.aclose()


class FallbackRecognizer:
    """``recognizers`` tried in turn (see the module docstring); ``cooldown_s``,
    ``probe_interval_s``, ``probe_timeout_s`` and ``clock`` go to its ``ProviderHealth``."""

    def __init__(
        self,
        recognizers: Sequence[SpeechRecognizer],
        *,
        connect_timeout_s: float = 3.0,
        max_buffer_s: float = 30.0,
        cooldown_s: float = 60.0,
        probe_interval_s: float = 10.0,
        probe_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health = ProviderHealth(
            recognizers,
            probe=probe_recognizer,
            cooldown_s=cooldown_s,
            probe_interval_s=probe_interval_s,
            probe_timeout_s=probe_timeout_s,
            clock=clock,
        )
        self.connect_timeout_s = connect_timeout_s
        self.max_buffer_bytes = int(max_buffer_s * SAMPLE_RATE)
        # the first provider's events; keyterms are always taken (passed on to those that use them)
        self.capabilities = dataclasses.replace(recognizers[0].capabilities, keyterms=True, turns=True)

    @property
    def recognizers(self) -> tuple[SpeechRecognizer, ...]:
        return self.health.providers

    def stream(
        self, *, language: str | None = None, keyterms: Sequence[str] = (), turn: TurnSettings | None = None
    ) -> FallbackRecognitionStream:
        return FallbackRecognitionStream(self, language, keyterms, turn)

    async def aclose(self) -> None:
        await self.health.aclose()
        for recognizer in self.recognizers:
            await recognizer.aclose()


class FallbackRecognitionStream:
    """One call's stream on the first usable recognizer; ``switched`` once it moved on.
    Its ``ready`` is known once it is iterated (the wait for a provider happens there)."""

    def __init__(
        self,
        owner: FallbackRecognizer,
        language: str | None,
        keyterms: Sequence[str] = (),
        turn: TurnSettings | None = None,
    ) -> None:
        self._owner = owner
        self._turn = turn
        self._language = language
        self._keyterms = tuple(keyterms)
        self._candidates = owner.health.order()
        self._at = 0
        self.active: RecognitionStream = open_stream(
            self._candidates[0], language=language, keyterms=self._keyterms, turn=turn
        )
        self.switched = False
        self.ready = asyncio.Event()
        self._since_final = bytearray()
        self._ended = False
        self._closed = False
        self._low_latency = False

    def prefer_low_latency(self, on: bool) -> None:
        """Passed on to the provider in use, and to the next one after a switch."""
        self._low_latency = on
        prefer_low_latency(self.active, on)

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
        self._closed = True
        self.ready.set()
        await self.active.aclose()

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecognitionEvent]:
        while True:
            recognizer = self._candidates[self._at]
            last = self._at == len(self._candidates) - 1
            try:
                if not last:
                    await self._wait_ready(recognizer)
                self.ready.set()
                async for event in self.active:
                    if isinstance(event, Final):
                        self._since_final.clear()
                    yield event
                return
            except Exception as exc:  # connect timeout, ProviderError, anything the provider raised
                if self._closed:
                    return
                self._owner.health.failed(recognizer)
                hub.notify(ProviderFailed("asr", type(recognizer).__name__, fell_back=not last))
                if last:
                    self.ready.set()
                    raise
                log.warning("ASR provider failed, switching", provider=type(recognizer).__name__, error=repr(exc))
            if not await self._switch():
                return

    async def _wait_ready(self, recognizer: SpeechRecognizer) -> None:
        if self.active.ready.is_set():
            return
        limit = self._owner.connect_timeout_s
        try:
            async with asyncio.timeout(limit):
                await self.active.ready.wait()
        except TimeoutError:
            raise ProviderError(f"not connected within {limit} s", provider=type(recognizer).__name__) from None

    async def _switch(self) -> bool:
        """Move to the next recognizer; False if the stream was closed meanwhile."""
        with contextlib.suppress(Exception):
            await self.active.aclose()
        if self._closed:
            return False
        self._at += 1
        self.active = open_stream(
            self._candidates[self._at], language=self._language, keyterms=self._keyterms, turn=self._turn
        )
        self.switched = True
        if self._low_latency:
            prefer_low_latency(self.active, True)
        if self._since_final:
            self.active.push(bytes(self._since_final))
        if self._ended:
            await self.active.end_input()
        return True


# --- synthesis -----------------------------------------------------------------------------
async def probe_synthesizer(synthesizer: SpeechSynthesizer, text: str = "Hello.") -> None:
    """Speak ``text``: raises unless audio comes back."""
    audio = [c.audio async for c in synthesizer.synthesize(_one(text))]
    if not any(audio):
        raise ProviderError("no audio", provider=type(synthesizer).__name__)


class FallbackSynthesizer:
    """``synthesizers`` tried in turn (see the module docstring); ``cooldown_s``,
    ``probe_interval_s``, ``probe_timeout_s`` and ``clock`` go to its ``ProviderHealth``,
    whose probe speaks ``probe_text``."""

    def __init__(
        self,
        synthesizers: Sequence[SpeechSynthesizer],
        *,
        apology: str = "Sorry, I'm having trouble speaking right now.",
        first_audio_timeout_s: float = 4.0,
        cooldown_s: float = 60.0,
        probe_interval_s: float = 10.0,
        probe_timeout_s: float = 10.0,
        probe_text: str = "Hello.",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        async def probe(synthesizer: SpeechSynthesizer) -> None:
            await probe_synthesizer(synthesizer, probe_text)

        self.health = ProviderHealth(
            synthesizers,
            probe=probe,
            cooldown_s=cooldown_s,
            probe_interval_s=probe_interval_s,
            probe_timeout_s=probe_timeout_s,
            clock=clock,
        )
        self.apology = apology
        self.first_audio_timeout_s = first_audio_timeout_s
        self._apology_audio = b""

    @property
    def synthesizers(self) -> tuple[SpeechSynthesizer, ...]:
        return self.health.providers

    async def prepare(self) -> None:
        """Render the apology once (the first provider that can) to play when all fail."""
        for synth in self.health.order():
            try:
                chunks = [c.audio async for c in synth.synthesize(_one(self.apology))]
            except Exception as exc:
                self.health.failed(synth)
                log.warning("could not pre-render the apology", provider=type(synth).__name__, error=repr(exc))
                continue
            self._apology_audio = b"".join(chunks)
            return

    async def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        tee = PhraseTee(phrases)
        candidates = self.health.order()
        done = 0  # phrases finished (their last chunk handed out)
        try:
            for n, synth in enumerate(candidates):
                # The last provider may take its time, unless an apology can take over from it.
                guarded = n < len(candidates) - 1 or bool(self._apology_audio)
                limit = self.first_audio_timeout_s if guarded else None
                try:
                    async for chunk in self._attempt(synth, tee, done, limit, voice, language, model):
                        if chunk.last:
                            done = chunk.phrase + 1
                        yield chunk
                    return
                except Exception as exc:
                    if tee.error is not None and exc is tee.error:
                        raise
                    self.health.failed(synth)
                    hub.notify(ProviderFailed("tts", type(synth).__name__, fell_back=n < len(candidates) - 1))
                    log.warning("TTS provider failed", provider=type(synth).__name__, error=repr(exc), phrase=done)
            log.error("every TTS provider failed", apology=bool(self._apology_audio))
            if self._apology_audio:
                yield AudioChunk(self._apology_audio, done, last=True)
        finally:
            await tee.aclose()

    async def _attempt(
        self,
        synth: SpeechSynthesizer,
        tee: PhraseTee,
        start: int,
        limit: float | None,
        voice: str | None,
        language: str | None,
        model: str | None,
    ) -> AsyncIterator[AudioChunk]:
        """``synth``'s chunks for the phrases from ``start`` on, numbered within the whole
        reply. With a ``limit``, raises TimeoutError when a phrase waits that long for audio."""
        it = synth.synthesize(tee.reader(start), voice=voice, language=language, model=model).__aiter__()
        finished, last_audio = start, time.monotonic()
        next_task: asyncio.Task[AudioChunk] | None = None
        try:
            while True:
                if limit is None:
                    try:
                        chunk = await it.__anext__()
                    except StopAsyncIteration:
                        return
                else:
                    next_task = asyncio.ensure_future(it.__anext__())
                    while not (await asyncio.wait({next_task}, timeout=limit / 4))[0]:
                        if len(tee.items) > finished:  # a phrase is waiting for audio
                            since = max(last_audio, tee.pulled_at[finished])
                            if time.monotonic() - since > limit:
                                raise TimeoutError(f"no audio from {type(synth).__name__} for {limit} s")
                    try:
                        chunk = next_task.result()
                    except StopAsyncIteration:
                        return
                    finally:
                        next_task = None
                last_audio = time.monotonic()
                if start:
                    chunk = AudioChunk(chunk.audio, chunk.phrase + start, chunk.last)
                if chunk.last:
                    finished = chunk.phrase + 1
                yield chunk
        finally:
            try:
                if next_task is not None:
                    await cancel_and_wait(next_task)
            finally:
                with contextlib.suppress(Exception):
                    await it.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.health.aclose()
        for synth in self.synthesizers:
            await synth.aclose()


async def _one(text: str) -> AsyncIterator[str]:
    yield text
