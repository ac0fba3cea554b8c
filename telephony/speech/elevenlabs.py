"""ElevenLabs TTS: the multi-context WebSocket (streaming) and HTTP streaming (fallback).

``ElevenLabsSynthesizer`` opens one ``multi-stream-input`` socket per ``synthesize`` call
(one agent reply), as soon as it is called, so the handshake overlaps the LLM's first
tokens. Each phrase gets its own context (``p0``, ``p1`` ...): initialise, send the text
with ``flush``, close the context. Audio comes back tagged with its context id, so every
chunk maps to exactly one phrase (what the call session needs to know what was heard);
phrases render concurrently up to ``max_contexts`` (ElevenLabs limits contexts per socket)
and are handed out in order. ``output_format=ulaw_8000`` goes to Twilio untouched.
Closing the iterator (barge-in) closes the open contexts and the socket.

The SDK ships only URL building and message types for these sockets (no client), so the
client is written here, on picows' implementation of the ``websockets`` asyncio API
(``picows.websockets``: the same calls, framing and masking in C; ~1.3 against ~5.5 µs of CPU
a message sent); the server's messages are plain dicts (``audio``, ``isFinal``,
``contextId``, or ``error``/``message``).

``ElevenLabsHttpSynthesizer`` is the SDK's own HTTP streaming client
(``AsyncElevenLabs.text_to_speech.stream``), one request per phrase: slower to start, but
independent of the WebSocket service.

Both take the voice, model and language per ``synthesize`` call (a flow's ``voice`` /
``tts_model`` / ``language``) and resolve them the same way (``ElevenLabsVoicing``):

- voice: the call's (the flow's ``voice``); else the one they were built with (the
  settings' ``elevenlabs_voice``) when the deployment chose one; else, with the stock
  voice (``DEFAULT_VOICE``, American English), the language's voice from ``voices`` (an
  Indian voice for ``hi``, ``hi-en`` and ``en-IN``);
- model: the call's; else the one they were built with, unless the language is not
  English and that model speaks English only: then ``eleven_flash_v2_5``;
- ``language_code``: ``elevenlabs_language`` of the language (``hi`` for hi and hi-en, none
  for English), sent only to the models that take it (the v2.5 ones: flash, turbo; the
  SDK documents that multilingual_v2 does not).

The WebSocket client asks for no compression (``compression=None``): the audio is base64
text, and deflating it costs CPU on every chunk for little gain (issue 16).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import picows.websockets as websockets  # the websockets API on picows (see the module docstring)
import structlog
from elevenlabs import AsyncElevenLabs
from elevenlabs.environment import ElevenLabsEnvironment
from elevenlabs.types import CloseContext, CloseSocket, GenerationConfig, InitialiseContext, SendTextMulti
from elevenlabs.url_utils import build_ws_url

from dialgraph.server.core.language import base as base_language
from dialgraph.server.core.language import elevenlabs_language
from dialgraph.telephony.speech.base import AudioChunk, ProviderError
from dialgraph.telephony.speech.tasks import cancel_and_wait

log = structlog.get_logger(__name__)
OUTPUT_FORMAT = "ulaw_8000"
_DONE = object()

DEFAULT_VOICE = "21m00Tcm4TlvDq8ikWAM"  # Rachel (premade, American English)
DEFAULT_MODEL = "eleven_flash_v2_5"
MULTILINGUAL_MODEL = "eleven_flash_v2_5"  # for a non-English flow when the configured model is English-only
# "Monika Sogam - Hindi Modulated Voice", a voice-library voice (language hi; its English
# twin is in the library's Indian English category). A library voice may first need adding
# to the account ("My Voices"); a flow's own ``voice`` always wins.
INDIAN_VOICE = "1qEiC6qsybMkmnNdVMbK"
LANGUAGE_VOICES: Mapping[str, str] = {"hi": INDIAN_VOICE, "hi-en": INDIAN_VOICE, "en-IN": INDIAN_VOICE}


def _pick(requested: str | None, default: str) -> str:
    """``requested`` unless it is None or blank: an empty name must not reach the vendor."""
    return (requested or "").strip() or default


def is_multilingual(model: str) -> bool:
    """The model speaks more than English (v2.5 flash/turbo, multilingual v1/v2, v3)."""
    return model.endswith("_v2_5") or model.startswith(("eleven_multilingual", "eleven_v3"))


def takes_language_code(model: str) -> bool:
    """The model accepts ``language_code`` (the v2.5 models: flash, turbo)."""
    return model.endswith("_v2_5")


@dataclass(frozen=True)
class ElevenLabsVoicing:
    """The defaults a synthesizer was built with, and how a call's request resolves
    against them (see the module docstring)."""

    voice: str = DEFAULT_VOICE
    model: str = DEFAULT_MODEL
    language: str | None = None
    voices: Mapping[str, str] = field(default_factory=lambda: dict(LANGUAGE_VOICES))

    def resolve(self, voice: str | None, model: str | None, language: str | None) -> tuple[str, str, str | None]:
        """(voice id, model id, language_code or None) for one ``synthesize`` call."""
        lang = (language or self.language or "en").strip()
        english = base_language(lang) in ("en", "multi")
        default_voice = self.voice
        if self.voice == DEFAULT_VOICE:  # the stock voice, not one the deployment chose
            default_voice = self.voices.get(lang, self.voice)
        voice_id = _pick(voice, default_voice)
        model_id = (model or "").strip()
        if not model_id:
            model_id = self.model if english or is_multilingual(self.model) else MULTILINGUAL_MODEL
        code = elevenlabs_language(lang) if lang != "multi" else None
        return voice_id, model_id, code if code and takes_language_code(model_id) else None


class ElevenLabsSynthesizer:
    """Streaming TTS over the multi-context WebSocket (see the module docstring)."""

    def __init__(
        self,
        api_key: str,
        *,
        url: str | None = None,
        voice: str = DEFAULT_VOICE,
        model: str = DEFAULT_MODEL,
        language: str | None = None,
        voices: Mapping[str, str] | None = None,
        connect_timeout_s: float = 3.0,
        max_contexts: int = 4,
        inactivity_timeout_s: int = 60,
    ) -> None:
        self._api_key = api_key
        self._base = (url or ElevenLabsEnvironment.PRODUCTION.value).rstrip("/")
        self.voicing = ElevenLabsVoicing(voice, model, language, dict(LANGUAGE_VOICES if voices is None else voices))
        self.voice = voice
        self.model = model
        self.language = language
        self.connect_timeout_s = connect_timeout_s
        self.max_contexts = max_contexts
        self.inactivity_timeout_s = inactivity_timeout_s

    def url_for(self, voice: str | None, language: str | None, model: str | None = None) -> str:
        voice_id, model_id, code = self.voicing.resolve(voice, model, language)
        params = {"model_id": model_id, "output_format": OUTPUT_FORMAT}
        params["inactivity_timeout"] = str(self.inactivity_timeout_s)
        if code:
            params["language_code"] = code
        return build_ws_url(self._base, ["v1", "text-to-speech", voice_id, "multi-stream-input"], params)

    def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        url = self.url_for(voice, language, model)
        return _Reply(self, phrases, url).run()

    async def aclose(self) -> None:
        pass


class _Reply:
    """One reply: one socket, one context per phrase."""

    def __init__(self, owner: ElevenLabsSynthesizer, phrases: AsyncIterable[str], url: str):
        self._owner = owner
        self._phrases = phrases
        self._url = url
        self._slots = asyncio.Semaphore(owner.max_contexts)
        self._open: set[str] = set()
        self._sent = 0  # contexts opened so far
        self._all_sent = False
        self._source_error: BaseException | None = None

    async def run(self) -> AsyncIterator[AudioChunk]:
        try:
            ws = await asyncio.wait_for(
                websockets.connect(
                    self._url,
                    additional_headers={"xi-api-key": self._owner._api_key},
                    max_size=None,
                    compression=None,  # base64 audio: deflating it costs CPU on every chunk (issue 16)
                ),
                self._owner.connect_timeout_s,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise ProviderError(f"elevenlabs connect failed: {exc!r}", provider="elevenlabs") from exc
        sender_task = asyncio.get_running_loop().create_task(self._send_loop(ws))
        buffered: dict[int, list[bytes]] = {}
        finished: set[int] = set()
        current = 0
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("error") or (msg.get("message") and "audio" not in msg):
                    raise ProviderError(
                        f"elevenlabs error: {msg.get('error') or msg.get('message')}", provider="elevenlabs"
                    )
                cid = msg.get("contextId") or msg.get("context_id") or ""
                if not cid.startswith("p"):
                    continue
                index = int(cid[1:])
                if msg.get("audio"):
                    audio = base64.b64decode(msg["audio"])
                    if index == current:
                        yield AudioChunk(audio, index)
                    else:
                        buffered.setdefault(index, []).append(audio)
                if msg.get("isFinal") or msg.get("is_final"):
                    self._open.discard(cid)
                    self._slots.release()
                    finished.add(index)
                    while current in finished:
                        for audio in buffered.pop(current, []):
                            yield AudioChunk(audio, current)
                        yield AudioChunk(b"", current, last=True)
                        current += 1
                        for audio in buffered.pop(current, []):
                            if current not in finished:
                                yield AudioChunk(audio, current)
                    if self._all_sent and current == self._sent:
                        break
                if sender_task.done() and sender_task.exception() is not None:
                    raise ProviderError(f"elevenlabs send failed: {sender_task.exception()!r}", provider="elevenlabs")
            else:
                if not (self._all_sent and current == self._sent):
                    raise ProviderError(f"elevenlabs socket closed ({ws.close_code})", provider="elevenlabs")
            if self._source_error is not None:
                raise self._source_error
        except websockets.ConnectionClosed as exc:
            raise ProviderError(f"elevenlabs socket dropped: {exc!r}", provider="elevenlabs") from exc
        finally:
            try:
                await cancel_and_wait(sender_task)
            finally:
                await self._close(ws)

    async def _send_loop(self, ws: Any) -> None:
        try:
            async for phrase in self._phrases:
                if not phrase.strip():
                    continue
                await self._slots.acquire()
                cid = f"p{self._sent}"
                self._open.add(cid)
                self._sent += 1
                for message in (
                    InitialiseContext(
                        text=" ", context_id=cid, generation_config=GenerationConfig(chunk_length_schedule=[50])
                    ),
                    SendTextMulti(text=phrase.strip() + " ", context_id=cid, flush=True),
                    CloseContext(context_id=cid, close_context=True),
                ):
                    await ws.send(json.dumps(message.dict()))
        except Exception as exc:  # the phrase source failed: finish what was sent, then raise it
            self._source_error = exc
        self._all_sent = True
        if self._sent == 0 or self._source_error is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps(CloseSocket(close_socket=True).dict()))

    async def _close(self, ws: Any) -> None:
        """Barge-in or the end: close what is still open, then the socket (briefly, best effort)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                for cid in sorted(self._open):
                    await ws.send(json.dumps(CloseContext(context_id=cid, close_context=True).dict()))
                await ws.send(json.dumps(CloseSocket(close_socket=True).dict()))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await ws.close()


class ElevenLabsHttpSynthesizer:
    """ElevenLabs over the SDK's HTTP streaming endpoint, one request per phrase."""

    def __init__(
        self,
        api_key: str,
        *,
        url: str | None = None,
        voice: str = DEFAULT_VOICE,
        model: str = DEFAULT_MODEL,
        language: str | None = None,
        voices: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._client = AsyncElevenLabs(api_key=api_key, base_url=url.rstrip("/") if url else None, timeout=timeout_s)
        self.voicing = ElevenLabsVoicing(voice, model, language, dict(LANGUAGE_VOICES if voices is None else voices))
        self.voice = voice
        self.model = model
        self.language = language

    async def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        index, previous = 0, ""
        voice_id, model_id, code = self.voicing.resolve(voice, model, language)
        extra: dict[str, Any] = {}
        if code:
            extra["language_code"] = code
        async for phrase in phrases:
            if not phrase.strip():
                continue
            if previous:
                extra["previous_text"] = previous
            try:
                async for audio in self._client.text_to_speech.stream(
                    voice_id,
                    text=phrase.strip(),
                    model_id=model_id,
                    output_format=OUTPUT_FORMAT,
                    **extra,
                ):
                    if audio:
                        yield AudioChunk(audio, index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise ProviderError(f"elevenlabs http failed: {exc!r}", provider="elevenlabs-http") from exc
            yield AudioChunk(b"", index, last=True)
            previous = f"{previous} {phrase.strip()}".strip()[-500:]
            index += 1

    async def aclose(self) -> None:
        pass
