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
client is written here on ``websockets``; the server's messages are plain dicts
(``audio``, ``isFinal``, ``contextId``, or ``error``/``message``).

``ElevenLabsHttpSynthesizer`` is the SDK's own HTTP streaming client
(``AsyncElevenLabs.text_to_speech.stream``), one request per phrase: slower to start, but
independent of the WebSocket service.

Both take the voice and model per ``synthesize`` call (a flow's ``voice`` / ``tts_model``),
falling back to the ones they were built with (the settings' ``elevenlabs_voice`` /
``elevenlabs_model``) when the call names none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import structlog
import websockets
from elevenlabs import AsyncElevenLabs
from elevenlabs.environment import ElevenLabsEnvironment
from elevenlabs.types import CloseContext, CloseSocket, GenerationConfig, InitialiseContext, SendTextMulti
from elevenlabs.url_utils import build_ws_url

from dialgraph.telephony.speech.base import AudioChunk, ProviderError
from dialgraph.telephony.speech.tasks import cancel_and_wait

log = structlog.get_logger(__name__)
OUTPUT_FORMAT = "ulaw_8000"
_DONE = object()


def _pick(requested: str | None, default: str) -> str:
    """``requested`` unless it is None or blank: an empty name must not reach the vendor."""
    return (requested or "").strip() or default


class ElevenLabsSynthesizer:
    """Streaming TTS over the multi-context WebSocket (see the module docstring)."""

    def __init__(
        self,
        api_key: str,
        *,
        url: str | None = None,
        voice: str = "21m00Tcm4TlvDq8ikWAM",
        model: str = "eleven_flash_v2_5",
        language: str | None = None,
        connect_timeout_s: float = 3.0,
        max_contexts: int = 4,
        inactivity_timeout_s: int = 60,
    ) -> None:
        self._api_key = api_key
        self._base = (url or ElevenLabsEnvironment.PRODUCTION.value).rstrip("/")
        self.voice = voice
        self.model = model
        self.language = language
        self.connect_timeout_s = connect_timeout_s
        self.max_contexts = max_contexts
        self.inactivity_timeout_s = inactivity_timeout_s

    def url_for(self, voice: str, language: str | None, model: str | None = None) -> str:
        model = _pick(model, self.model)
        params = {"model_id": model, "output_format": OUTPUT_FORMAT}
        params["inactivity_timeout"] = str(self.inactivity_timeout_s)
        if language and language not in ("en", "multi") and model.endswith(("flash_v2_5", "turbo_v2_5")):
            params["language_code"] = language.split("-")[0]
        return build_ws_url(self._base, ["v1", "text-to-speech", voice, "multi-stream-input"], params)

    def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        url = self.url_for(_pick(voice, self.voice), language or self.language, model)
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
                websockets.connect(self._url, additional_headers={"xi-api-key": self._owner._api_key}, max_size=None),
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
        voice: str = "21m00Tcm4TlvDq8ikWAM",
        model: str = "eleven_flash_v2_5",
        language: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._client = AsyncElevenLabs(api_key=api_key, base_url=url.rstrip("/") if url else None, timeout=timeout_s)
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
        voice_id, model_id = _pick(voice, self.voice), _pick(model, self.model)
        lang = language or self.language
        extra: dict[str, Any] = {}
        if lang and lang not in ("en", "multi"):
            extra["language_code"] = lang.split("-")[0]
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
