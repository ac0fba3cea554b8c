"""A local ElevenLabs stand-in, the TTS server: the multi-context WebSocket and HTTP streaming.

Served by uvicorn on 127.0.0.1 (both on one port, like api.elevenlabs.io), for the real
``elevenlabs`` SDK (HTTP) and our WebSocket client. It checks ``xi-api-key`` and
``output_format=ulaw_8000``, records every message, and answers with deterministic "audio":
``fake_audio(text)`` (10 ms of one byte value per character), base64 in
``{"audio", "contextId"}`` messages, then ``{"isFinal": true, "contextId"}`` when a context
closes; on HTTP the raw bytes, streamed. Each socket's ``SocketRecord`` and each HTTP
request's record name the voice, ``model_id`` and ``language_code`` it asked for (None when
not sent), and whether the client offered permessage-deflate (``extensions``).

Timing (``ElevenLabsTiming``; the default adds no delay and renders 10 ms per character, so
tests see audio at once): ``first_byte_ms`` after each flush before its first audio message
(ElevenLabs quotes ~75 ms model latency for Flash v2.5, elevenlabs.io/docs/overview/models;
~100 ms with the network), ``pace`` the rate audio is streamed at, in seconds of audio per
second (0: as fast as the socket takes it), and ``ms_per_char`` how long the rendered speech
is (~65 ms a character is a speaking rate of ~150 words a minute).

Faults: ``refuse`` rejects WebSocket handshakes (HTTP 403) and HTTP requests (503);
``drop_after_chunks`` closes the socket abruptly (1011) after that many audio messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

CHUNK = 1600


def fake_audio(text: str, ms_per_char: int = 10) -> bytes:
    """The 'speech' the fake renders for ``text``: ``ms_per_char`` (80 bytes at 10 ms) per character."""
    n = 8 * ms_per_char
    return b"".join(bytes([0x20 + ord(c) % 0x40]) * n for c in text.strip())


@dataclass(frozen=True, slots=True)
class ElevenLabsTiming:
    """How fast the stand-in speaks, modelled on the vendor's published behaviour."""

    first_byte_ms: float = 0.0  # after each flush, before its first audio message
    pace: float = 0.0  # seconds of audio streamed per second (0: no pacing)
    ms_per_char: int = 10  # length of the rendered speech


# ~75 ms model latency (Flash v2.5, published) plus the network; streamed faster than real
# time; speech at ~150 words a minute.
ELEVENLABS_TIMING = ElevenLabsTiming(first_byte_ms=100.0, pace=4.0, ms_per_char=65)


@dataclass
class SocketRecord:
    voice: str
    query: dict[str, str]
    extensions: str | None = None  # the client's Sec-WebSocket-Extensions offer
    messages: list[dict[str, Any]] = field(default_factory=list)
    flushes: list[tuple[str, str]] = field(default_factory=list)  # (context id, text flushed)
    closed_contexts: list[str] = field(default_factory=list)
    ended: bool = False

    @property
    def model_id(self) -> str | None:
        return self.query.get("model_id")

    @property
    def language_code(self) -> str | None:
        return self.query.get("language_code")


class ElevenLabsFake:
    """``async with ElevenLabsFake() as fake:``; ``fake.url`` is the http:// base URL."""

    def __init__(
        self,
        *,
        api_key: str = "el-test-key",
        drop_after_chunks: int | None = None,
        timing: ElevenLabsTiming = ElevenLabsTiming(),  # noqa: B008 - frozen
    ) -> None:
        self.api_key = api_key
        self.timing = timing
        self.refuse = False
        self.drop_after_chunks = drop_after_chunks
        self.chunk_delay_s = 0.0
        self.sockets: list[SocketRecord] = []
        self.http_requests: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        app = Starlette(
            routes=[
                WebSocketRoute("/v1/text-to-speech/{voice}/multi-stream-input", self._ws),
                Route("/v1/text-to-speech/{voice}/stream", self._http, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="websockets-sansio"
        )
        self._server = uvicorn.Server(config)
        self._stopping = asyncio.Event()
        self._serve_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        """The environment that points a ``dialgraph serve`` process at this stand-in."""
        return {"ELEVENLABS_API_KEY": self.api_key, "ELEVENLABS_URL": self.url}

    async def __aenter__(self) -> ElevenLabsFake:
        self._serve_task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.should_exit = True
        if self._serve_task is not None:
            await self._serve_task

    def _reject(self, query: dict[str, str], headers: Any) -> str | None:
        if self.refuse:
            return "refused by fault injection"
        if headers.get("xi-api-key") != self.api_key:
            return "invalid api key"
        if query.get("output_format") != "ulaw_8000":
            return f"expected output_format=ulaw_8000, got {query.get('output_format')}"
        return None

    async def _ws(self, ws: WebSocket) -> None:
        query = dict(ws.query_params)
        reason = self._reject(query, ws.headers)
        if reason:
            self.rejected.append(reason)
            await ws.close(code=1008)
            return
        await ws.accept()
        record = SocketRecord(
            voice=ws.path_params["voice"], query=query, extensions=ws.headers.get("sec-websocket-extensions")
        )
        self.sockets.append(record)
        inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        # Read (and record) concurrently with sending, so what the client sends before it
        # hangs up (barge-in: close_context, close_socket) is recorded even mid-audio.
        reader_task = asyncio.get_running_loop().create_task(self._read(ws, record, inbox))
        try:
            await self._answer(ws, inbox)
        except Exception:  # the client is gone
            pass
        finally:
            with contextlib.suppress(Exception):
                await ws.close(1000)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await reader_task
            reader_task.cancel()
            record.ended = True

    async def _read(self, ws: WebSocket, record: SocketRecord, inbox: asyncio.Queue[dict[str, Any] | None]) -> None:
        try:
            while True:
                msg = await ws.receive_json()
                record.messages.append(msg)
                cid = msg.get("context_id") or msg.get("contextId") or "default"
                if msg.get("close_context"):
                    record.closed_contexts.append(cid)
                elif msg.get("flush"):
                    record.flushes.append((cid, (msg.get("text") or "").strip()))
                await inbox.put(msg)
                if msg.get("close_socket"):
                    return
        except Exception:  # disconnect
            pass
        finally:
            await inbox.put(None)

    async def _answer(self, ws: WebSocket, inbox: asyncio.Queue[dict[str, Any] | None]) -> None:
        texts: dict[str, str] = {}
        sent = 0
        while (msg := await inbox.get()) is not None:
            if msg.get("close_socket"):
                for cid in list(texts):
                    await ws.send_json({"isFinal": True, "contextId": cid})
                return
            cid = msg.get("context_id") or msg.get("contextId") or "default"
            if msg.get("close_context"):
                if texts.pop(cid, None) is not None:
                    await ws.send_json({"isFinal": True, "contextId": cid})
                continue
            texts[cid] = texts.get(cid, "") + (msg.get("text") or "")
            if not msg.get("flush"):
                continue
            audio, texts[cid] = fake_audio(texts[cid], self.timing.ms_per_char), ""
            if audio and self.timing.first_byte_ms and await self._pause(self.timing.first_byte_ms / 1000):
                return
            for i in range(0, len(audio), CHUNK):
                if self.drop_after_chunks is not None and sent >= self.drop_after_chunks:
                    self.drop_after_chunks = None
                    await ws.close(code=1011)
                    return
                if self.chunk_delay_s:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.chunk_delay_s)
                    if self._stopping.is_set():
                        return
                if i and self.timing.pace and await self._pause(CHUNK / 8000 / self.timing.pace):
                    return
                chunk = base64.b64encode(audio[i : i + CHUNK]).decode()
                await ws.send_json({"audio": chunk, "normalizedAlignment": None, "alignment": None, "contextId": cid})
                sent += 1

    async def _pause(self, seconds: float) -> bool:
        """Sleep (a plain timer: hundreds of sockets pace at once); True when the fake is stopping."""
        await asyncio.sleep(seconds)
        return self._stopping.is_set()

    async def _http(self, request: Request) -> Response:
        query = dict(request.query_params)
        reason = self._reject(query, request.headers)
        body = await request.json()
        self.http_requests.append(
            {
                "voice": request.path_params["voice"],
                "model_id": body.get("model_id"),
                "language_code": body.get("language_code"),
                "query": query,
                "body": body,
            }
        )
        if reason:
            self.rejected.append(reason)
            return JSONResponse({"detail": {"status": "rejected", "message": reason}}, status_code=503)
        audio = fake_audio(body["text"], self.timing.ms_per_char)

        async def stream() -> Any:
            for i in range(0, len(audio), CHUNK):
                yield audio[i : i + CHUNK]
                await asyncio.sleep(0)

        return StreamingResponse(stream(), media_type="audio/basic")
